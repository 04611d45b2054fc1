"""Buffered SMTP I/O on an asyncio Protocol (the part of Postfix's smtp_stream.c smtpd needs).

Our own small reader instead of StreamReader because the protocol engine
must know whether more input is already buffered (replies are flushed
only when it is not: RFC 2920 pipelining costs one write per batch), must
split over-long lines at a byte limit instead of failing, and must find
the end of DATA in bulk.  smtpd_timeout is a deadline per wait, kept by one
timer per connection that is moved only when it fires early (a wait that
starts re-arms nothing while a timer is due no later than its deadline):
no timer to create and cancel for every command.
Replies are flushed automatically before every wait for input, so a
client is never left waiting for a reply that sits in our buffer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

HIGH_WATER = 1 << 20  # pause reading beyond this much unprocessed input


class Connection(asyncio.Protocol):
    """One client connection: input buffer, pending replies, timeout."""

    def __init__(self, on_connect: Callable[[Connection], None], timeout: float) -> None:
        self.on_connect = on_connect
        self.timeout = timeout
        self.buf = bytearray()
        self.out: list[bytes] = []
        self.eof = False
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.peer: tuple[str, int] = ("", 0)
        self._timer: asyncio.TimerHandle | None = None  # armed for _timer_at
        self._timer_at = 0.0
        self._due = 0.0  # when the current wait times out (loop time)
        self.data_bytes = 0  # DATA bytes read so far, for "lost connection after DATA (N bytes)"
        self.tls = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop the connection runs on

    def local_addr(self) -> str:
        """Our end's address (the ``lip=`` a SASL server is told), or ""."""
        name = self.transport.get_extra_info("sockname") if self.transport else None
        addr = str(name[0]) if name else ""
        return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.loop = asyncio.get_running_loop()  # once, not per wait (3.11 asks getpid() each time)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.on_connect(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # keep the transport: replies to pipelined commands still go out (TLS
        # cannot half-close: asyncio closes a TLS transport at EOF whatever we say)
        return not self.tls



    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._stop_timer()
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- waiting -------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, timeout: float | None = None) -> None:
        """Wait for more input (flushing replies first); TimeoutError after smtpd_timeout
        (or ``timeout``)."""
        if self.out and self.push():  # the flush, without a coroutine per wait
            await self.drain()
        if self.eof:
            raise ConnectionResetError("client went away")
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        loop = self.loop or asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        self._due = due = loop.time() + (self.timeout if timeout is None else max(timeout, 0.0))
        if self._timer is None or self._timer_at > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = loop.call_at(due, self._expire), due
        try:
            await waiter
        finally:
            self._waiter = None

    def _expire(self) -> None:
        """The timer is due: the wait it was armed for times out; a later wait moves it."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting: the next wait arms it again
        if self._due <= self._timer_at:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = (self.loop or asyncio.get_running_loop()).call_at(self._due, self._expire)
            self._timer_at = self._due

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait_input(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for more input: False at EOF, TimeoutError after."""
        try:
            await self._wait(timeout)
        except ConnectionResetError:
            return False
        return True

    # -- input ------------------------------------------------------------------------------

    def pending(self) -> bool:
        return bool(self.buf)

    async def readline(self, limit: int) -> bytes | None:
        """The next line with its LF, or its first ``limit`` bytes; None at EOF."""
        while True:
            end = self.buf.find(b"\n", 0, limit)
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) >= limit:
                line = bytes(self.buf[:limit])
                del self.buf[:limit]
                return line
            if self.eof:
                return None
            try:
                await self._wait()
            except ConnectionResetError:
                return None

    async def skip_line(self, limit: int) -> None:
        """Discard input up to and including the next LF (the rest of an over-long line)."""
        while True:
            line = await self.readline(limit)
            if line is None or line.endswith(b"\n"):
                return

    async def read_data(self, max_size: int) -> tuple[bytes | None, int]:
        """DATA up to the ``.`` line: (raw bytes, or None when over max_size; bytes read).

        Raises ConnectionResetError on EOF and TimeoutError on timeout; the
        count of bytes read so far is then in ``self.data_bytes``.
        """
        buf = self.buf
        buf[0:0] = b"\n"  # the first line may be "." too
        pos = 0
        dropped = 0
        self.data_bytes = 0
        while True:
            hit = buf.find(b"\n.", pos)
            while hit >= 0:
                after = hit + 2
                if after < len(buf) and buf[after] == 0x0A:
                    return self._take_data(hit, after + 1, dropped, max_size)
                if after + 1 < len(buf) and buf[after] == 0x0D and buf[after + 1] == 0x0A:
                    return self._take_data(hit, after + 2, dropped, max_size)
                if after + 1 >= len(buf):
                    break  # "\n." or "\n.\r" at the end: need more input
                hit = buf.find(b"\n.", hit + 1)
            pos = hit if hit >= 0 else max(len(buf) - 1, 0)
            self.data_bytes = dropped + max(buf.rfind(b"\n"), 0)  # complete lines only
            if max_size and dropped + len(buf) > max_size + 1 and pos > 1:
                dropped += pos - 1
                del buf[1:pos]
                buf[0] = 0x58  # not a LF: what follows was already seen not to start a "." line
                pos = 1
            await self._wait()

    async def read_exact(self, size: int, sink: Callable[[bytes], None] | None) -> None:
        """Exactly ``size`` bytes (a BDAT chunk), handed to ``sink`` piece by piece
        (None: read and discard). ``self.data_bytes`` counts them as they come;
        ConnectionResetError on EOF, TimeoutError on timeout."""
        self.data_bytes = 0
        while self.data_bytes < size:
            if self.buf:
                take = min(size - self.data_bytes, len(self.buf))
                if sink is not None:
                    sink(bytes(self.buf[:take]))
                del self.buf[:take]
                self.data_bytes += take
                continue
            await self._wait()

    def _take_data(
        self, hit: int, end: int, dropped: int, max_size: int
    ) -> tuple[bytes | None, int]:
        size = dropped + hit  # bytes before the "\n." minus the virtual "\n", plus the LF
        with memoryview(self.buf) as view:
            data = bytes(view[1 : hit + 1])
        del self.buf[:end]
        self.data_bytes = size
        if dropped or (max_size and size > max_size):
            return None, size
        return data, size

    # -- TLS --------------------------------------------------------------------------------

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> ssl.SSLObject:
        """The server side of a TLS handshake on this connection (STARTTLS or wrapper mode).

        Whatever plaintext was read ahead is thrown away first: a command
        pipelined after STARTTLS must never run as if it came through TLS
        (CVE-2011-0411, the STARTTLS injection; Postfix's vstream_fpurge()).
        The caller has written and flushed the 220 reply; no event-loop turn
        passes between that and the handshake taking over the socket, so no
        ClientHello byte can land in our plaintext buffer. Raises ssl.SSLError
        for a failed handshake, TimeoutError when it does not finish in
        ``timeout``, ConnectionError when the client goes away."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.eof:
            raise ConnectionResetError("client went away")
        self.buf.clear()
        self._paused = False  # start_tls pauses and resumes the socket itself
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(transport, self, context, server_side=True,
                                       ssl_handshake_timeout=timeout)
        except ConnectionAbortedError as exc:
            if "longer than" in str(exc) or "timed out" in str(exc):
                raise TimeoutError(str(exc)) from exc
            raise
        if new is None:
            raise ConnectionResetError("client went away")
        self.transport = cast(asyncio.Transport, new)
        self.tls = True
        sslobj = new.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        return sslobj

    # -- output --------------------------------------------------------------------------------

    def write(self, line: str) -> None:
        self.out.append(line.encode("utf-8", "surrogateescape") + b"\r\n")

    def push(self) -> bool:
        """Hand the pending replies to the transport; True when the transport is
        full and :meth:`drain` must be awaited (the client is not reading)."""
        if not self.out or self.transport is None:
            return False
        data = b"".join(self.out)
        self.out.clear()
        if self.transport.is_closing():
            return False
        self.transport.write(data)
        return self._write_paused

    async def flush(self) -> None:
        if self.push():
            await self.drain()

    async def drain(self) -> None:
        """Wait until the transport takes more (TimeoutError after smtpd_timeout)."""
        if self._write_paused:
            loop = asyncio.get_running_loop()
            self._drained = loop.create_future()
            timer = loop.call_later(self.timeout, _expire, self._drained)
            try:
                await self._drained
            finally:
                timer.cancel()
                self._drained = None

    def close(self) -> None:
        self._stop_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
