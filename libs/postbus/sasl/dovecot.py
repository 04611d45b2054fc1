"""The Dovecot auth protocol, client side (≈ Postfix's xsasl_dovecot_server.c).

smtpd_sasl_path names the socket: ``inet:host:port``, ``unix:/path`` or a
path, relative to queue_directory as Postfix's chrooted smtpd sees it
(``private/auth``).  As Postfix, a process keeps one connection: handshake
(``VERSION 1 2`` and ``CPID`` from us; ``VERSION``, ``MECH``..., ``DONE`` from
Dovecot), then ``AUTH id mech service=smtp nologin lip= rip= [secured]
[resp=]``, ``CONT`` both ways and ``OK``/``FAIL``.  Unlike one Postfix
smtpd, one of our processes runs many sessions at once, so their requests
share the connection, told apart by their ids (Dovecot refuses a second
connection with the same CPID while the first is open).  Base64 goes
through untouched, after Postfix's own check of its alphabet.  The
mechanism list of the handshake serves EHLO.

What Postfix answers, we answer: an unknown mechanism is ``Invalid
authentication mechanism``, a lost server ``Connection lost to
authentication server`` (temporary), an unreachable one ``Can't connect to
authentication server``... with the same warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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
_IDS = itertools.count(1)  # request ids, unique in this process (Dovecot keys them by CPID)
_CONNECT_ERRORS = (OSError, ValueError, TimeoutError, asyncio.LimitOverrunError,
                   asyncio.IncompleteReadError)


def is_valid_base64(data: str) -> bool:
    """Postfix's is_valid_base64(): the alphabet only (Dovecot judges the rest)."""
    return _BASE64.fullmatch(data) is not None


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pending: dict[int, asyncio.Queue[list[str] | None]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    alive: bool = True

    async def dispatch(self) -> None:
        """Hand each OK, CONT or FAIL line to the request it answers; at the end, None."""
        try:
            while line := await self.reader.readline():
                if not line.endswith(b"\n"):
                    break
                words = line.decode("utf-8", "replace").rstrip("\n").split("\t")
                if words[0] not in ("OK", "CONT", "FAIL"):
                    continue
                if len(words) < 2:
                    log.warning("SASL: Protocol error")
                    continue
                queue = self.pending.get(int(words[1])) if words[1].isdigit() else None
                if queue is not None:
                    queue.put_nowait(words)
        except _CONNECT_ERRORS:
            pass
        finally:
            self.alive = False
            self.writer.close()
            for queue in self.pending.values():
                queue.put_nowait(None)


@dataclass
class DovecotBackend:
    path: str  # as configured, for the log; two backends with one path are equal
    cached: list[Mechanism] | None = field(default=None, compare=False)
    _conn: _Connection | None = field(default=None, repr=False, compare=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: Config) -> DovecotBackend:
        path = cfg.get("smtpd_sasl_path").strip()
        if not path.startswith("inet:"):
            bare = path.removeprefix("unix:")
            if not bare.startswith("/"):
                path = os.path.join(cfg.get("queue_directory"), bare)
        return cls(path)

    async def connection(self, fresh: bool = False) -> _Connection | None:
        """The shared, handshaken connection (a new one with ``fresh``), or None (warned)."""
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.alive and not fresh:
                return conn
            if conn is not None:
                conn.writer.close()
            self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> _Connection | None:
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                if self.path.startswith("inet:"):
                    host, _, port = self.path[5:].rpartition(":")
                    reader, writer = await asyncio.open_connection(
                        host.strip("[]"), int(port), limit=LINE_LIMIT)
                else:
                    reader, writer = await asyncio.open_unix_connection(
                        self.path.removeprefix("unix:"), limit=LINE_LIMIT)
        except _CONNECT_ERRORS as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("SASL: Connect to Dovecot auth socket '%s' failed: %s",
                        self.path, why or "Connection timed out")
            return None
        try:
            writer.write(f"VERSION\t{_MAJOR}\t{_MINOR}\nCPID\t{os.getpid()}\n".encode())
            async with asyncio.timeout(AUTH_TIMEOUT):
                await writer.drain()
                mechs = await self._handshake(reader)
        except _CONNECT_ERRORS as exc:
            log.warning("SASL: Couldn't send handshake: %s", exc or "timeout")
            mechs = None
        if mechs is None:
            writer.close()
            return None
        self.cached = mechs
        conn = _Connection(reader, writer)
        conn.task = asyncio.create_task(conn.dispatch())
        return conn

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
            await self.connection()
        return self.cached

    def exchange(self, *, service: str, client_addr: str, server_addr: str,
                 secured: bool) -> DovecotExchange:
        return DovecotExchange(self, service, client_addr, server_addr, secured)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.task is not None:
            conn.writer.close()
            conn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.task


@dataclass
class DovecotExchange:
    backend: DovecotBackend
    service: str
    client_addr: str
    server_addr: str
    secured: bool
    request: int = 0
    conn: _Connection | None = None
    replies: asyncio.Queue[list[str] | None] = field(default_factory=asyncio.Queue)

    async def first(self, mechanism: str, response: str | None) -> Step:
        mechs = self.backend.cached or []
        if not any(m.name.upper() == mechanism.upper() for m in mechs):
            return Step(Status.FAIL, "Invalid authentication mechanism")  # Postfix 3.7
        if response is not None and not is_valid_base64(response):
            return Step(Status.FAIL, "Invalid base64 data in initial response")
        self.request = next(_IDS)
        line = (f"AUTH\t{self.request}\t{mechanism}\tservice={self.service}\tnologin"
                f"\tlip={self.server_addr}\trip={self.client_addr}")
        if self.secured:
            line += "\tsecured"
        if response is not None:
            line += f"\tresp={response}"
        line += "\n"
        for attempt in range(2):  # as Postfix: a connection that went away is made anew once
            conn = await self.backend.connection(fresh=attempt > 0)
            if conn is None:
                return Step(Status.TEMP, "Can't connect to authentication server")
            self.conn = conn
            conn.pending[self.request] = self.replies
            if await self._write(line):
                return await self._reply()
            conn.pending.pop(self.request, None)
        return Step(Status.TEMP, "Can't connect to authentication server")

    async def next(self, response: str) -> Step:
        if not is_valid_base64(response):
            return Step(Status.FAIL, "Invalid base64 data in continued response")
        if not await self._write(f"CONT\t{self.request}\t{response}\n"):
            return Step(Status.TEMP, "Connection lost to authentication server")
        return await self._reply()

    async def _write(self, line: str) -> bool:
        conn = self.conn
        if conn is None or not conn.alive:
            return False
        try:
            conn.writer.write(line.encode("utf-8", "surrogateescape"))
            async with asyncio.timeout(AUTH_TIMEOUT):
                await conn.writer.drain()
        except _CONNECT_ERRORS:
            return False
        return True

    async def _reply(self) -> Step:
        """≈ xsasl_dovecot_handle_reply(): this request's OK, CONT or FAIL."""
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                words = await self.replies.get()
        except TimeoutError:
            words = None
        if words is None:
            return Step(Status.TEMP, "Connection lost to authentication server")
        cmd, args = words[0], words[2:]
        if cmd == "CONT":
            if not args:
                log.warning("missing Dovecot server %s reply field", cmd)
                return Step(Status.FAIL, "Authentication backend error")
            return Step(Status.MORE, args[0])
        user = reason = None
        for arg in args:
            if arg.startswith("user="):
                user = _printable(arg[5:])
            elif arg.startswith("reason=") and cmd == "FAIL":
                reason = _printable(arg[7:])
        if cmd == "OK":
            if user is None:
                log.warning("missing Dovecot server %s username field", cmd)
                return Step(Status.FAIL, "Authentication backend error")
            return Step(Status.DONE, "", user)
        return Step(Status.FAIL, reason or "", user)

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.pending.pop(self.request, None)


def _printable(text: str) -> str:
    """Postfix's printable(text, '?')."""
    return "".join(c if c.isprintable() else "?" for c in text)
