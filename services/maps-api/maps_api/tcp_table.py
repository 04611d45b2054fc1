"""The tcp_table protocol server (tcp_table(5)): ``tcp:HOST:PORT`` reads Postbus tables.

Each request is one line ``get SPACE key NEWLINE`` with the key %XX-encoded;
the answer is one line:

* ``200 value`` (found), ``500 not found``;
* ``400 reason`` for a temporary error, an unknown request (``put`` is not
  supported, as in Postfix's client), a bad %XX encoding or a value that
  does not fit Postfix's 4096-byte reply limit.

Texts and values are %XX-encoded (:func:`postbus.maps.types.tcp.hex_quote`).
The protocol carries no table name, so the server answers from the tables
in ``postbus_maps_api_tcp_maps``, first match wins.  A request line longer
than :data:`MAX_REQUEST` bytes, or not complete :data:`REQUEST_TIMEOUT`
seconds after its first byte, gets ``400``, a warning is logged and the
connection is closed (the reader never holds more than the line limit).  A
connection idle between requests is closed after :data:`IDLE_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import logging

from maps_api.connections import Handler
from maps_api.tables import TableService
from postbus.logging import peer_name
from postbus.maps.table import TableRetry
from postbus.maps.types.tcp import MAX_LINE, hex_quote, hex_unquote

log = logging.getLogger("postbus.maps_api")

MAX_REQUEST = 8192  # bytes per request line, without its newline; also the reader's limit
IDLE_TIMEOUT = 100.0  # seconds a client may stay silent between requests
REQUEST_TIMEOUT = 30.0  # seconds from the first byte of a request line to its newline
LOOKUP_TIMEOUT = 30.0  # seconds before a lookup is answered 400


def _line(code: int, text: str) -> bytes:
    return f"{code} {hex_quote(text)}\n".encode("ascii")


async def answer(tables: TableService, line: bytes) -> bytes:
    """The reply line to one request line (without its newline)."""
    verb, sep, arg = line.partition(b" ")
    if verb != b"get" or not sep:
        return _line(400, "unsupported request: only get is implemented")
    try:
        key = hex_unquote(arg)
    except ValueError:
        return _line(400, "bad %XX encoding in request")
    if not tables.tcp_maps:
        return _line(400, "no tables configured: set postbus_maps_api_tcp_maps")
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT):
            value = await tables.lookup_first(tables.tcp_maps, key)
    except TimeoutError:
        return _line(400, f"lookup took longer than {LOOKUP_TIMEOUT:.0f}s")
    except TableRetry as exc:
        return _line(400, str(exc))
    except Exception as exc:  # a bug must not look like "not found"
        log.error("tcp_table lookup of %s failed", key, exc_info=True)
        return _line(400, f"internal error: {type(exc).__name__}")
    if value is None:
        return _line(500, "not found")
    reply = _line(200, value)
    if len(reply) > MAX_LINE:
        return _line(400, f"value longer than {MAX_LINE} bytes once encoded")
    return reply


TOO_LONG = f"request longer than {MAX_REQUEST} bytes"


class _BadLine(Exception):
    """A request line that cannot be read: too long, or stalled half-way."""


async def read_request(
    reader: asyncio.StreamReader, idle_timeout: float, request_timeout: float
) -> bytes | None:
    """One request line without its newline; None when the client closed between lines.

    ``TimeoutError`` when the client sent nothing for ``idle_timeout``;
    :class:`_BadLine` for a line over :data:`MAX_REQUEST` (whatever the
    reader's limit), not finished within ``request_timeout``, or cut short.
    """
    try:
        async with asyncio.timeout(idle_timeout):
            first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None
    try:
        async with asyncio.timeout(request_timeout):
            line = first if first == b"\n" else first + await reader.readuntil(b"\n")
    except TimeoutError:
        raise _BadLine(f"request not complete after {request_timeout:g}s") from None
    except asyncio.IncompleteReadError:
        raise _BadLine("unexpected end of input in request") from None
    except asyncio.LimitOverrunError:
        raise _BadLine(TOO_LONG) from None
    if len(line) > MAX_REQUEST + 1:
        raise _BadLine(TOO_LONG)
    return line.rstrip(b"\r\n")


def handler(
    tables: TableService,
    *,
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
) -> Handler:
    """The per-connection coroutine of the tcp_table server."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await read_request(reader, idle_timeout, request_timeout)
            except TimeoutError:
                log.info("tcp_table: idle timeout after %gs from %s", idle_timeout,
                         peer_name(writer))
                return
            except _BadLine as exc:
                log.warning("tcp_table: protocol error from %s: %s", peer_name(writer), exc)
                writer.write(_line(400, str(exc)))
                await writer.drain()
                return
            if line is None:
                return
            writer.write(await answer(tables, line))
            await writer.drain()

    return serve
