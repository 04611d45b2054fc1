"""The Dovecot auth protocol, client side (≈ Postfix's xsasl_dovecot_server.c).

smtpd_sasl_path names the socket: ``inet:host:port``, ``unix:/path`` or a
path, relative to queue_directory as Postfix's chrooted smtpd sees it
(``private/auth``).  Each AUTH command gets its own connection: handshake
(``VERSION 1 2`` and ``CPID`` from us; ``VERSION``, ``MECH``..., ``DONE`` from
Dovecot), then ``AUTH id mech service=smtp nologin lip= rip= [secured]
[resp=]``, ``CONT`` both ways and ``OK``/``FAIL``.  Base64 goes through
untouched, after Postfix's own check of its alphabet.  The mechanism list
of the last handshake is kept, so EHLO does not cost a connection.

What Postfix answers, we answer: an unknown mechanism is ``Invalid
authentication mechanism``, a lost server ``Connection lost to
authentication server`` (temporary), an unreachable one ``Can't connect to
authentication server``... with the same warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from dataclasses import dataclass, field

from postbus.config.loader import Config
from postbus.sasl import Mechanism, Status, Step

log = logging.getLogger("postbus.smtpd")

AUTH_TIMEOUT = 10.0  # Postfix's AUTH_TIMEOUT
LINE_LIMIT = 65536  # one reply line from Dovecot, at most
_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")
_MAJOR, _MINOR = 1, 2  # AUTH_PROTOCOL_MAJOR_VERSION, AUTH_PROTOCOL_MINOR_VERSION


def is_valid_base64(data: str) -> bool:
    """Postfix's is_valid_base64(): the alphabet only (Dovecot judges the rest)."""
    return _BASE64.fullmatch(data) is not None


@dataclass
class DovecotBackend:
    path: str  # as configured, for the log
    cached: list[Mechanism] | None = None
    _ids: int = field(default=0, repr=False)

    @classmethod
    def from_config(cls, cfg: Config) -> DovecotBackend:
        path = cfg.get("smtpd_sasl_path").strip()
        if not path.startswith("inet:"):
            bare = path.removeprefix("unix:")
            if not bare.startswith("/"):
                path = os.path.join(cfg.get("queue_directory"), bare)
        return cls(path)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A handshaken connection (and a fresh mechanism list), or None (warned)."""
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                if self.path.startswith("inet:"):
                    host, _, port = self.path[5:].rpartition(":")
                    reader, writer = await asyncio.open_connection(
                        host.strip("[]"), int(port), limit=LINE_LIMIT)
                else:
                    reader, writer = await asyncio.open_unix_connection(
                        self.path.removeprefix("unix:"), limit=LINE_LIMIT)
        except (OSError, ValueError, TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("SASL: Connect to Dovecot auth socket '%s' failed: %s",
                        self.path, why or "Connection timed out")
            return None
        try:
            writer.write(f"VERSION\t{_MAJOR}\t{_MINOR}\nCPID\t{os.getpid()}\n".encode())
            async with asyncio.timeout(AUTH_TIMEOUT):
                await writer.drain()
                mechs = await self._handshake(reader)
        except (OSError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
            log.warning("SASL: Couldn't send handshake: %s", exc or "timeout")
            mechs = None
        if mechs is None:
            writer.close()
            return None
        self.cached = mechs
        return reader, writer

    async def _handshake(self, reader: asyncio.StreamReader) -> list[Mechanism] | None:
        mechs: list[Mechanism] = []
        seen_mech = False
        while line := await reader.readline():
            cmd, _, rest = line.decode("utf-8", "replace").rstrip("\n").partition("\t")
            if cmd == "VERSION" and rest:
                major, _, _minor = rest.partition("\t")
                if not major.isdigit():
                    log.warning("SASL: Protocol version error")
                    return None
                if int(major) != _MAJOR:
                    log.warning("SASL: Protocol version mismatch (%s vs. %d)", major, _MAJOR)
                    return None
            elif cmd == "MECH" and rest:
                seen_mech = True
                name, *props = rest.split("\t")
                mechs.append(Mechanism(name, frozenset(p.lower() for p in props)))
            elif cmd == "SPID" and not seen_mech:
                log.warning("SASL: Connected to wrong auth socket "
                            "(auth-master instead of auth-client)")
                return None
            elif cmd == "DONE":
                return mechs
        return None

    async def mechanisms(self) -> list[Mechanism] | None:
        if self.cached is None:
            conn = await self.connect()
            if conn is not None:
                conn[1].close()
        return self.cached

    def exchange(self, *, service: str, client_addr: str, server_addr: str,
                 secured: bool) -> DovecotExchange:
        return DovecotExchange(self, service, client_addr, server_addr, secured)

    def next_id(self) -> int:
        self._ids += 1
        return self._ids


@dataclass
class DovecotExchange:
    backend: DovecotBackend
    service: str
    client_addr: str
    server_addr: str
    secured: bool
    request: int = 0
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def first(self, mechanism: str, response: str | None) -> Step:
        mechs = self.backend.cached or []
        if not any(m.name.upper() == mechanism.upper() for m in mechs):
            return Step(Status.FAIL, "Invalid authentication mechanism")  # Postfix 3.7
        if response is not None and not is_valid_base64(response):
            return Step(Status.FAIL, "Invalid base64 data in initial response")
        conn = await self.backend.connect()
        if conn is None:
            return Step(Status.TEMP, "Can't connect to authentication server")
        self.reader, self.writer = conn
        self.request = self.backend.next_id()
        line = (f"AUTH\t{self.request}\t{mechanism}\tservice={self.service}\tnologin"
                f"\tlip={self.server_addr}\trip={self.client_addr}")
        if self.secured:
            line += "\tsecured"
        if response is not None:
            line += f"\tresp={response}"
        return await self._send(line + "\n")

    async def next(self, response: str) -> Step:
        if not is_valid_base64(response):
            return Step(Status.FAIL, "Invalid base64 data in continued response")
        return await self._send(f"CONT\t{self.request}\t{response}\n")

    async def _send(self, line: str) -> Step:
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(line.encode("utf-8", "surrogateescape"))
            async with asyncio.timeout(AUTH_TIMEOUT):
                await self.writer.drain()
                return await self._reply(self.reader)
        except (OSError, ValueError, TimeoutError, asyncio.LimitOverrunError):
            await self.close()
            return Step(Status.TEMP, "Connection lost to authentication server")

    async def _reply(self, reader: asyncio.StreamReader) -> Step:
        """≈ xsasl_dovecot_handle_reply(): the first OK, CONT or FAIL for our request."""
        while line := await reader.readline():
            if not line.endswith(b"\n"):
                break
            cmd, *args = line.decode("utf-8", "replace").rstrip("\n").split("\t")
            if cmd not in ("OK", "CONT", "FAIL"):
                continue
            if not args:
                log.warning("SASL: Protocol error")
                continue
            if not args[0].isdigit() or int(args[0]) != self.request:
                continue
            if cmd == "CONT":
                if len(args) < 2:
                    log.warning("missing Dovecot server %s reply field", cmd)
                    return Step(Status.FAIL, "Authentication backend error")
                return Step(Status.MORE, args[1])
            user = reason = None
            for arg in args[1:]:
                if arg.startswith("user="):
                    user = _printable(arg[5:])
                elif arg.startswith("reason=") and cmd == "FAIL":
                    reason = _printable(arg[7:])
            if cmd == "OK":
                await self.close()
                if user is None:
                    log.warning("missing Dovecot server %s username field", cmd)
                    return Step(Status.FAIL, "Authentication backend error")
                return Step(Status.DONE, "", user)
            await self.close()
            return Step(Status.FAIL, reason or "", user)
        await self.close()
        return Step(Status.TEMP, "Connection lost to authentication server")

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


def _printable(text: str) -> str:
    """Postfix's printable(text, '?')."""
    return "".join(c if c.isprintable() else "?" for c in text)
