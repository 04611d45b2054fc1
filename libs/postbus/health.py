"""A tiny HTTP endpoint every service runs: ``/healthz``, ``/readyz`` and ``/metrics``.

Written on asyncio streams rather than a web framework so that even the
leanest role pays almost nothing for it.  Like every listener it bounds its
input: a request head of at most :data:`MAX_HEADERS` lines of
:data:`MAX_LINE` bytes, read within :data:`TIMEOUT` seconds; a longer one
gets ``400``, a slower one is disconnected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

MAX_LINE = 8192  # bytes per request or header line (the stream reader's limit)
MAX_HEADERS = 100  # header lines per request
TIMEOUT = 5.0  # seconds to send the whole request head


class HealthServer:
    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_LINE
        )
        sock = self.server.sockets[0]
        self.port = sock.getsockname()[1]

    async def close(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(TIMEOUT):
                    request = await _read_head(reader)
            except ValueError:  # a line over MAX_LINE, or too many lines
                body = b"request head too large\n"
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
                return
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path in ("/healthz", "/readyz", "/livez"):
                ok = self.ready() if path == "/readyz" else True
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", (b"ok\n" if ok else b"not ready\n")
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """The request line; the header lines are read and dropped. ValueError when too large."""
    request = await reader.readline()
    for _ in range(MAX_HEADERS + 1):
        if await reader.readline() in (b"\r\n", b"\n", b""):
            return request
    raise ValueError("too many header lines")
