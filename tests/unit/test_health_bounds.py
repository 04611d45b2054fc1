"""The health/metrics listener of every service bounds its input (real loopback sockets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from postbus import health
from postbus.health import MAX_HEADERS, MAX_LINE, HealthServer


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, lambda: True)
    await srv.start()
    yield srv
    await srv.close()


async def _ask(port: int, data: bytes, eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if eof:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


OK = b"HTTP/1.1 200 OK\r\n"
TOO_LARGE = b"HTTP/1.1 400 Bad Request\r\n"


@pytest.mark.parametrize("data, reply", [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", OK),
    (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * MAX_HEADERS + b"\r\n", OK),
    (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", TOO_LARGE),
    (b"GET /healthz HTTP/1.1\r\nX: " + b"y" * MAX_LINE + b"\r\n\r\n", TOO_LARGE),
    (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\n\r\n", TOO_LARGE),
    (b"\xff\x00garbage\r\n\r\n", b"HTTP/1.1 404 Not Found\r\n"),
])
async def test_request_heads(server: HealthServer, data: bytes, reply: bytes) -> None:
    out = await _ask(server.port, data)
    assert out.startswith(reply), out
    assert (await _ask(server.port, b"GET /readyz HTTP/1.0\r\n\r\n")).startswith(OK)


async def test_slow_or_silent_client_is_disconnected(server: HealthServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "TIMEOUT", 0.3)
    start = time.monotonic()
    assert await _ask(server.port, b"GET /healthz HTTP/1.1\r\n", eof=False) == b""
    assert time.monotonic() - start >= 0.25
    assert (await _ask(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")).startswith(OK)
