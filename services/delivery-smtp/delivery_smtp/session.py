"""One open connection to a server, command by command (≈ smtp_session.c, smtp_chat.c).

:class:`SmtpChat` drives aiosmtplib's low-level calls; :class:`LmtpChat`
is a small hand-written client, because aiosmtplib has no LMTP (LHLO and
one reply per recipient after DATA). Both raise only :class:`Lost` and
:class:`TimedOut` for broken conversations, so the protocol code above
them (proto.py) is the same for both; every reply is a
:class:`~postbus.delivery.Reply`, never an exception.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Awaitable

import aiosmtplib
from aiosmtplib.esmtp import parse_esmtp_extensions

from delivery_smtp.addr import Target
from postbus.delivery import Reply


class Lost(Exception):
    """The server closed the connection."""


class TimedOut(Exception):
    """The server did not answer in time."""


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def data_bytes(content: bytes) -> bytes:
    """Content as sent after DATA: CRLF line ends, leading dots doubled, then ``.``.

    Queued content already has CRLF line ends (cleanup writes them), so the
    common case is two C-speed scans and one replace, not a regex pass."""
    crlf = content.count(b"\r\n")
    if content.count(b"\n") == crlf and content.count(b"\r") == crlf:
        body = content
    else:
        body = _LINE_ENDS.sub(b"\r\n", content)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    body = body.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    return body + b".\r\n"


class Chat(abc.ABC):
    """A connected session; ``features`` are the EHLO/LHLO keywords (lower case)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.features: dict[str, str] = {}
        self.tls = False
        self.created = time.monotonic()
        self.reuse_count = 0
        self.broken = False  # not fit for reuse (lost, timed out, out of sync)

    @property
    def namaddr(self) -> str:
        return self.target.namaddr

    @property
    def relay(self) -> str:
        return self.target.namaddrport

    @abc.abstractmethod
    async def greeting(self, timeout: float | None) -> Reply:
        """The server's banner (read once, right after the connection is made)."""

    @abc.abstractmethod
    async def command(self, *words: bytes, timeout: float | None) -> Reply: ...

    @abc.abstractmethod
    async def hello(self, verb: str, name: str, timeout: float | None) -> Reply:
        """EHLO/HELO/LHLO; a 2xx EHLO or LHLO reply sets ``features``."""

    @abc.abstractmethod
    async def starttls(
        self, context: ssl.SSLContext, server_hostname: str, timeout: float | None
    ) -> Reply: ...

    @abc.abstractmethod
    async def send(self, data: bytes, timeout: float | None) -> None:
        """Write raw bytes (the message body) and wait until they are sent."""

    @abc.abstractmethod
    async def reply(self, timeout: float | None) -> Reply:
        """Read one more reply (after the body; LMTP reads one per recipient)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    async def quit(self, timeout: float | None) -> None:
        """Say goodbye if we still can; never raises."""
        if self.connected and not self.broken:
            with contextlib.suppress(Exception):
                await self.command(b"QUIT", timeout=timeout)
        self.close()


class SmtpChat(Chat):
    """SMTP over aiosmtplib, on a socket we connected ourselves (for Postfix's error texts)."""

    def __init__(self, target: Target, sock: socket.socket, helo_name: str) -> None:
        super().__init__(target)
        self.smtp = aiosmtplib.SMTP(
            sock=sock, local_hostname=helo_name, start_tls=False, validate_certs=False
        )

    async def greeting(self, timeout: float | None) -> Reply:
        try:
            got = await self.smtp.connect(timeout=timeout)
        except aiosmtplib.SMTPConnectResponseError as exc:
            return Reply(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError as exc:
            raise TimedOut() from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise Lost() from exc
        return Reply(got.code, got.message)

    async def _call(self, coro: Awaitable[aiosmtplib.SMTPResponse]) -> Reply:
        try:
            got = await coro
        except aiosmtplib.SMTPResponseException as exc:
            return Reply(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError as exc:
            self.broken = True
            raise TimedOut() from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.broken = True
            raise Lost() from exc
        return Reply(got.code, got.message)

    async def command(self, *words: bytes, timeout: float | None) -> Reply:
        return await self._call(self.smtp.execute_command(*words, timeout=timeout))

    async def hello(self, verb: str, name: str, timeout: float | None) -> Reply:
        if verb == "EHLO":
            got = await self._call(self.smtp.ehlo(hostname=name, timeout=timeout))
            self.features = dict(self.smtp.esmtp_extensions) if got.code // 100 == 2 else {}
            return got
        self.features = {}
        return await self._call(self.smtp.helo(hostname=name, timeout=timeout))

    async def starttls(
        self, context: ssl.SSLContext, server_hostname: str, timeout: float | None
    ) -> Reply:
        got = await self._call(
            self.smtp.starttls(
                tls_context=context, server_hostname=server_hostname, timeout=timeout
            )
        )
        if got.code == 220:
            self.tls = True
            self.features = {}
        return got

    async def send(self, data: bytes, timeout: float | None) -> None:
        protocol = self.smtp.protocol
        if protocol is None:
            raise Lost()
        try:
            # The end-of-data reply may arrive before reply() is called; like
            # aiosmtplib's own DATA code, mark it expected or it is dropped.
            protocol._response_pending = True
            protocol.write(data)
            await asyncio.wait_for(protocol._drain_helper(), timeout)
        except TimeoutError as exc:
            self.broken = True
            raise TimedOut() from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            self.broken = True
            raise Lost() from exc

    async def reply(self, timeout: float | None) -> Reply:
        protocol = self.smtp.protocol
        if protocol is None:
            raise Lost()
        return await self._call(protocol.read_response(timeout=timeout))

    def close(self) -> None:
        self.smtp.close()

    @property
    def connected(self) -> bool:
        return self.smtp.is_connected


class LmtpChat(Chat):
    """A minimal LMTP client (RFC 2033) on asyncio streams."""

    def __init__(
        self, target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(target)
        self.reader = reader
        self.writer = writer

    async def greeting(self, timeout: float | None) -> Reply:
        return await self.reply(timeout)

    async def reply(self, timeout: float | None) -> Reply:
        try:
            return await asyncio.wait_for(self._read_reply(), timeout)
        except TimeoutError as exc:
            self.broken = True
            raise TimedOut() from exc
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.broken = True
            raise Lost() from exc

    async def _read_reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = await self.reader.readline()
            if not raw.endswith(b"\n"):
                raise asyncio.IncompleteReadError(raw, None)
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            if len(line) < 3 or not line[:3].isdigit():
                raise ValueError(f"malformed reply {line!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), "\n".join(lines))

    async def command(self, *words: bytes, timeout: float | None) -> Reply:
        await self.send(b" ".join(words) + b"\r\n", timeout)
        return await self.reply(timeout)

    async def hello(self, verb: str, name: str, timeout: float | None) -> Reply:
        got = await self.command(verb.encode(), name.encode(), timeout=timeout)
        ok = got.code // 100 == 2 and verb != "HELO"
        self.features = parse_esmtp_extensions(got.text)[0] if ok else {}
        return got

    async def starttls(
        self, context: ssl.SSLContext, server_hostname: str, timeout: float | None
    ) -> Reply:
        got = await self.command(b"STARTTLS", timeout=timeout)
        if got.code == 220:
            try:
                await asyncio.wait_for(
                    self.writer.start_tls(context, server_hostname=server_hostname), timeout
                )
            except TimeoutError as exc:
                self.broken = True
                raise TimedOut() from exc
            except (OSError, ssl.SSLError) as exc:
                self.broken = True
                raise Lost() from exc
            self.tls = True
            self.features = {}
        return got

    async def send(self, data: bytes, timeout: float | None) -> None:
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except TimeoutError as exc:
            self.broken = True
            raise TimedOut() from exc
        except OSError as exc:
            self.broken = True
            raise Lost() from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    @property
    def connected(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()
