"""``tcp:host:port`` client tables and the tcp_table codec (≈ dict_tcp.c, tcp_table(5)).

The request is ``get SPACE key NEWLINE``; the reply one line: ``200 value``
(found), ``500 text`` (not found), ``400 text`` (temporary error).  Keys,
values and texts are %XX-encoded: ``%``, whitespace and non-printable
bytes (everything outside ASCII 0x21..0x7e) become ``%XX`` (≈ hex_quote.c).

Like Postfix, the table is a pattern table (full keys only, original case);
a malformed reply, a status other than 2xx/4xx/5xx, a line longer than
4096 bytes or a connection error is :class:`TableRetry`.  Postfix retries a
failed connection up to ten times with one-second pauses; we try twice
(a fresh connection after a broken reused one) and let the caller's 4xx
retry do the rest, so a mail service never stalls for ten seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from postbus.maps.table import Table, TableConfigError, TableRetry, log, register_type
from postbus.maps.types.socketmap import ConnectionPool, parse_endpoint

__all__ = ["MAX_LINE", "TcpTable", "hex_quote", "hex_unquote"]

TIMEOUT = 100.0  # DICT_TCP_TMOUT, seconds
MAX_LINE = 4096  # DICT_TCP_MAXLEN: reply size limit

_QUOTE = re.compile(rb"[^\x21-\x24\x26-\x7e]")  # '%', space, controls, DEL and 8-bit
_UNQUOTE = re.compile(rb"%([0-9A-Fa-f]{2})|%")


def hex_quote(text: str) -> str:
    """Quote ``text`` as hex_quote() does (UTF-8 bytes, ``%XX`` in upper case)."""
    raw = text.encode("utf-8", "surrogateescape")
    return _QUOTE.sub(lambda m: b"%%%02X" % m.group()[0], raw).decode("ascii")


def hex_unquote(text: str | bytes) -> str:
    """Undo hex_quote(); raise ValueError on a ``%`` without two hex digits."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text

    def one(m: re.Match[bytes]) -> bytes:
        if m.group(1) is None:
            raise ValueError("bad %XX escape")
        return bytes([int(m.group(1), 16)])

    return _UNQUOTE.sub(one, raw).decode("utf-8", "surrogateescape")


class TcpTable(Table):
    """A table answered by a tcp_table server."""

    fixed = False  # dict_tcp_open(): DICT_FLAG_PATTERN

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        try:
            endpoint = parse_endpoint(f"inet:{name}")
        except TableConfigError:
            raise TableConfigError(f'bad tcp table "{spec}"; need tcp:host:port') from None
        self.pool = ConnectionPool(endpoint, TIMEOUT)

    async def _exchange(self, request: bytes, fresh: bool) -> bytes:
        async with self.pool.connection(fresh) as (reader, writer, reused, keep):
            try:
                writer.write(request)
                await asyncio.wait_for(writer.drain(), self.pool.timeout)
                line = await asyncio.wait_for(reader.readuntil(b"\n"), self.pool.timeout)
            except asyncio.LimitOverrunError as exc:
                raise ValueError(f"text longer than {MAX_LINE}") from exc
            except (asyncio.IncompleteReadError, ConnectionError):
                if reused:
                    return await self._exchange(request, fresh=True)
                raise
            if len(line) > MAX_LINE + 1:
                raise ValueError(f"text longer than {MAX_LINE}")
            keep.append(True)
            return line[:-1]

    async def lookup(self, key: str) -> str | None:
        request = f"get {hex_quote(key)}\n".encode("ascii")
        try:
            line = await self._exchange(request, fresh=False)
        except (OSError, EOFError, TimeoutError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("read TCP map reply from %s: %s", self.spec.partition(":")[2], reason)
            raise TableRetry(f"{self.spec}: {reason}") from None
        status = line[:3]
        try:
            if not status.isdigit() or len(line) < 4 or line[3:4] not in b" \t\r\n\f\v":
                raise ValueError("malformed reply")
            text = hex_unquote(line[4:])
        except ValueError:
            shown = line[:100].decode("ascii", "replace")
            log.warning("read TCP map reply from %s: malformed reply: %s",
                        self.spec.partition(":")[2], shown)
            self.pool.close()
            raise TableRetry(f"{self.spec}: malformed reply") from None
        if status[:1] == b"2":
            return text
        if status[:1] == b"5":
            return None
        if status[:1] != b"4":
            log.warning("read TCP map reply from %s: bad status code: %s",
                        self.spec.partition(":")[2], line[:100].decode("ascii", "replace"))
        self.pool.close()  # Postfix disconnects after a soft error
        raise TableRetry(f"{self.spec}: {text or 'lookup failed'}")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.pool.close()


register_type("tcp", TcpTable)
