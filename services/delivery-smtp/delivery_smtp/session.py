"""One open connection to a server, reply by reply (≈ smtp_session.c, smtp_chat.c).

:class:`Chat` is a small asyncio client shared by SMTP and LMTP: one
:class:`_Wire` protocol turns the bytes that arrive into whole replies,
queued in the order they came, so the protocol code above (proto.py) can
write several commands at once (RFC 2920 pipelining) and then take their
replies one by one. LMTP is the same conversation with LHLO and one reply
per accepted recipient after the data, so nothing here depends on which
of the two is spoken. Broken conversations raise only :class:`Lost` and
:class:`TimedOut`; every reply is a :class:`~postbus.delivery.Reply`,
never an exception.

A reply that has already arrived (the usual case for all but the first
reply to a pipelined group) is taken without any waiting machinery. A
reply waited for has its time limit kept by one lazy timer per session
rather than an ``asyncio.timeout()`` per read (an event-loop timer made
and cancelled several times per message): each wait only moves the
session's deadline, and the timer, when it fires, either ends the wait
that is past its deadline or sets itself again for the wait now running.
The rare waits (a full send buffer, the TLS handshake) keep
``asyncio.timeout()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import time
from collections import deque
from typing import cast

from delivery_smtp.addr import Target
from postbus.smtp.dotstuff import crlf_lines, stuff
from postbus.smtp.reply import NotAReply, Reply, ReplyLines, ehlo_features


class Lost(Exception):
    """The server closed the connection (or sent what is not a reply)."""


class TimedOut(Exception):
    """The server did not answer in time."""


class HandshakeFailed(Lost):
    """The TLS handshake after ``220`` to STARTTLS failed; the session is unusable."""


# A line that long without an end, or a reply with that many lines, is not SMTP.
_MAX_LINE = 64 * 1024
_MAX_LINES = 1000
# uvloop's clock and timers count milliseconds (a timer may fire half of one early)
_CLOCK_TICK = 0.001


def message_data(content: bytes, line_limit: int) -> tuple[bytes, bool]:
    """Content as sent after DATA: CRLF line ends, long lines broken, dots doubled, then ``.``.

    The flag says whether a line was broken (Postfix logs that once)."""
    lines = crlf_lines(content)
    folded = 0 < line_limit < max(map(len, lines))
    return stuff(b"\r\n".join(fold_lines(lines, line_limit) if folded else lines)), folded


def fold_lines(lines: list[bytes], limit: int) -> list[bytes]:
    """Lines longer than ``limit`` octets broken as Postfix's smtp client does (smtp_text_out()).

    The first ``limit`` octets end with CRLF, and each further piece is a
    line of a space and at most ``limit - 1`` octets, in headers and body
    alike. Only the first piece can start with a dot, so the dot that
    stuffing adds to it is not counted, as in Postfix."""
    step = max(limit - 1, 1)
    out: list[bytes] = []
    for line in lines:
        if len(line) <= limit:
            out.append(line)
            continue
        out.append(line[:limit])
        out += [b" " + line[i : i + step] for i in range(limit, len(line), step)]
    return out


class _Wire(asyncio.Protocol):
    """The byte stream of one connection: whole replies in, flow control out."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.replies: deque[Reply] = deque()
        self.waiter: asyncio.Future[bool] | None = None  # True: replies came or it closed
        self.closed = False
        self._partial = b""
        self._reader = ReplyLines(_MAX_LINES)
        self.paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        add, append = self._reader.add, self.replies.append
        try:
            for line in lines:
                if (reply := add(line)) is not None:
                    append(reply)
        except NotAReply:
            self._garbled()
            return
        if len(self._partial) > _MAX_LINE:
            self._garbled()
            return
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        self._resume()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._resume()

    # -- replies --------------------------------------------------------------------

    def _garbled(self) -> None:
        """Not SMTP: keep the replies read so far, then behave as a lost connection."""
        self.closed = True
        self._partial = b""
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    # -- writes -----------------------------------------------------------------------

    def _resume(self) -> None:
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark again."""
        while self.paused and not self.closed:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None
        if self.closed:
            raise Lost()


class Chat:
    """A connected SMTP or LMTP session; ``features`` are the EHLO/LHLO keywords (lower case)."""

    def __init__(self, target: Target, wire: _Wire) -> None:
        self.target = target
        self.wire = wire
        self.features: dict[str, str] = {}
        self.tls = False
        self.created = time.monotonic()
        self.reuse_count = 0
        self.broken = False  # not fit for reuse (lost, timed out, out of sync)
        self.quit_sent = False  # QUIT went out with the end of data: the session ends
        self._deadline = 0.0  # loop time by which the reply being waited for is late
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when that timer fires (never after the deadline)

    @classmethod
    async def over_socket(cls, target: Target, sock: socket.socket) -> Chat:
        """A session on a connected TCP socket (connected by the caller, for Postfix's texts)."""
        wire = _Wire()
        await asyncio.get_running_loop().create_connection(lambda: wire, sock=sock)
        return cls(target, wire)

    @classmethod
    async def over_unix(cls, target: Target, path: str) -> Chat:
        """A session on a UNIX-domain socket (LMTP); OSError when it cannot connect."""
        wire = _Wire()
        await asyncio.get_running_loop().create_unix_connection(lambda: wire, path)
        return cls(target, wire)

    @property
    def namaddr(self) -> str:
        return self.target.namaddr

    @property
    def relay(self) -> str:
        return self.target.namaddrport

    @property
    def connected(self) -> bool:
        transport = self.wire.transport
        return not self.wire.closed and transport is not None and not transport.is_closing()

    # -- the reply reader -----------------------------------------------------------

    async def reply(self, timeout: float | None) -> Reply:
        """The next reply, in the order the commands were sent."""
        wire = self.wire
        while True:
            if wire.replies:
                return wire.replies.popleft()
            if wire.closed:
                self.broken = True
                raise Lost()
            loop = asyncio.get_running_loop()
            waiter = wire.waiter = loop.create_future()
            if timeout is not None:
                self._arm(loop, loop.time() + timeout)
            else:  # no limit: a timer left by an earlier wait must not end this one
                self._deadline = math.inf
            try:
                came = await waiter
            finally:
                wire.waiter = None
            if not came:
                self.broken = True
                raise TimedOut()

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Set the deadline of the wait about to start; the timer is made anew only
        when none is pending or the pending one would fire after the deadline."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer fired: end the wait that is late, or follow the wait now running."""
        self._timer = None
        waiter = self.wire.waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait sets a timer again
        if loop.time() + _CLOCK_TICK >= self._deadline:
            waiter.set_result(False)
        else:
            self._timer_at = self._deadline
            self._timer = loop.call_at(self._deadline, self._expire, loop)

    async def greeting(self, timeout: float | None) -> Reply:
        """The server's banner (read once, right after the connection is made)."""
        return await self.reply(timeout)

    # -- the command layer ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes for the server without waiting (one or more whole commands)."""
        transport = self.wire.transport
        if self.wire.closed or transport is None or transport.is_closing():
            self.broken = True
            raise Lost()
        transport.write(data)

    async def send(self, data: bytes, timeout: float | None) -> None:
        """Write raw bytes (the message body) and wait until the transport has room again."""
        self.write(data)
        if self.wire.paused:
            try:
                async with asyncio.timeout(timeout):
                    await self.wire.drain()
            except TimeoutError as exc:
                self.broken = True
                raise TimedOut() from exc
            except Lost:
                self.broken = True
                raise

    async def command(self, *words: bytes, timeout: float | None) -> Reply:
        self.write(b" ".join(words) + b"\r\n")
        return await self.reply(timeout)

    async def hello(self, verb: str, name: str, timeout: float | None) -> Reply:
        """EHLO/HELO/LHLO; a 2xx EHLO or LHLO reply sets ``features``."""
        got = await self.command(verb.encode(), name.encode(), timeout=timeout)
        ok = got.code // 100 == 2 and verb != "HELO"
        self.features = ehlo_features(got.text) if ok else {}
        return got

    async def starttls(
        self, context: ssl.SSLContext, server_hostname: str, timeout: float | None
    ) -> Reply:
        got = await self.command(b"STARTTLS", timeout=timeout)
        if got.code != 220:
            return got
        wire = self.wire
        if wire.transport is None or wire.replies:  # replies after 220 would be in clear
            self.broken = True
            raise Lost()
        try:
            async with asyncio.timeout(timeout):
                transport = await asyncio.get_running_loop().start_tls(
                    wire.transport, wire, context, server_hostname=server_hostname or None
                )
        except TimeoutError as exc:
            self.broken = True
            raise TimedOut() from exc
        except (OSError, ssl.SSLError, ConnectionError, RuntimeError) as exc:
            self.broken = True
            raise HandshakeFailed(str(exc) or type(exc).__name__) from exc
        if transport is None:
            self.broken = True
            raise HandshakeFailed("no TLS transport")
        wire.transport = cast(asyncio.Transport, transport)
        self.tls = True
        self.features = {}
        return got

    def close(self) -> None:
        if self._timer is not None:  # a closed session is not kept alive by its timer
            self._timer.cancel()
            self._timer = None
        transport = self.wire.transport
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()

    async def quit(self, timeout: float | None) -> None:
        """Say goodbye if we still can (or read the answer to a QUIT that went out with
        the end of data); never raises."""
        if self.connected and not self.broken:
            with contextlib.suppress(Exception):
                if self.quit_sent:
                    await self.reply(timeout)
                else:
                    await self.command(b"QUIT", timeout=timeout)
        self.close()
