"""socketmap and tcp_table servers time out silent and half-sent requests.

The servers run in the test's own event loop with short timeouts (the
shipped ones are 100 s idle and 30 s per request) on real sockets, with a
real redis-server behind the tables; after each bad client the next one
is served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from maps_api import socketmap, tcp_table
from maps_api.connections import StreamServer
from maps_api.tables import RedisStore, TableService
from postbus.config.loader import Config
from postbus.maps import context
from postbus.servers import ServerProcess

pytestmark = pytest.mark.integration

IDLE, REQUEST = 0.5, 0.5
GOOD_SOCKETMAP = (b"29:virtual_alias_maps postmaster,", b"7:OK root,")
GOOD_TCP = (b"get postmaster\n", b"200 root\n")


@dataclass
class Ports:
    socketmap: int
    tcp: int


@pytest.fixture
async def ports(tmp_path: Path, redis: ServerProcess) -> AsyncIterator[Ports]:
    context.configure(redis.url)
    (tmp_path / "aliases").write_text("postmaster root\n")
    cfg = Config.from_text(
        f"virtual_alias_maps = proxy:texthash:{tmp_path}/aliases\n"
        f"postbus_maps_api_tcp_maps = texthash:{tmp_path}/aliases\n"
    )
    tables = TableService(cfg, RedisStore())
    sock = StreamServer("socketmap", socketmap.handler(
        tables, idle_timeout=IDLE, request_timeout=REQUEST))
    # the reader's default limit (64 KiB), not tcp_table.MAX_REQUEST: the
    # line limit must hold whatever limit the server was started with
    tcp = StreamServer("tcp_table", tcp_table.handler(
        tables, idle_timeout=IDLE, request_timeout=REQUEST))
    yield Ports((await sock.start("127.0.0.1", 0))[1], (await tcp.start("127.0.0.1", 0))[1])
    await sock.stop()
    await tcp.stop()
    await context.aclose()


async def exchange(port: int, data: bytes, *, shut: bool = False) -> tuple[bytes, float]:
    """Send ``data`` (and EOF with ``shut``); all the server sends until it closes."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if shut:
        writer.write_eof()
    out = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return out, time.monotonic() - start


async def still_serves(ports: Ports) -> None:
    assert (await exchange(ports.socketmap, GOOD_SOCKETMAP[0], shut=True))[0] == GOOD_SOCKETMAP[1]
    assert (await exchange(ports.tcp, GOOD_TCP[0], shut=True))[0] == GOOD_TCP[1]


async def test_good_requests(ports: Ports) -> None:
    await still_serves(ports)


@pytest.mark.parametrize("proto", ["socketmap", "tcp"])
async def test_silent_client_is_disconnected(ports: Ports, proto: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postbus.maps_api")
    port = ports.socketmap if proto == "socketmap" else ports.tcp
    out, took = await exchange(port, b"")
    assert out == b"" and took >= IDLE * 0.9
    name = "socketmap" if proto == "socketmap" else "tcp_table"
    assert f"{name}: idle timeout after 0.5s from 127.0.0.1:" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await still_serves(ports)


@pytest.mark.parametrize("proto, data, reply", [
    ("socketmap", b"29:virtual_alias",
     b"PERM protocol error: timeout after 0.5s in the middle of a netstring"),
    ("socketmap", b"2", b"PERM protocol error: timeout after 0.5s in the middle of a netstring"),
    ("tcp", b"get post", b"400 request%20not%20complete%20after%200.5s\n"),
])
async def test_half_a_request_then_silence(ports: Ports, proto: str, data: bytes, reply: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    port = ports.socketmap if proto == "socketmap" else ports.tcp
    out, took = await exchange(port, data)
    assert took >= REQUEST * 0.9
    if proto == "socketmap":
        assert out == b"%d:%s," % (len(reply), reply)
        assert "socketmap: protocol error from 127.0.0.1:" in caplog.text
    else:
        assert out == reply
        assert "tcp_table: protocol error from 127.0.0.1:" in caplog.text
    assert "request not complete" in caplog.text or "middle of a netstring" in caplog.text
    await still_serves(ports)


async def test_a_slow_but_steady_request_is_still_timed(ports: Ports) -> None:
    """Bytes trickling in keep no connection open beyond the request timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ports.tcp)
    start = time.monotonic()
    reply = asyncio.create_task(reader.read())
    for _ in range(100):  # 5 s of one byte every 50 ms, unless the server closes first
        if reply.done():
            break
        try:
            writer.write(b"a")
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.05)
    out = await asyncio.wait_for(reply, 20)
    assert out == b"400 request%20not%20complete%20after%200.5s\n"
    assert time.monotonic() - start < 3
    writer.close()
    await still_serves(ports)


async def test_tcp_line_limit_holds_with_any_reader_limit(ports: Ports) -> None:
    at_limit = b"get " + b"a" * (tcp_table.MAX_REQUEST - 4) + b"\n"
    assert (await exchange(ports.tcp, at_limit, shut=True))[0] == b"500 not%20found\n"
    out, _ = await exchange(ports.tcp, b"get " + b"a" * (tcp_table.MAX_REQUEST - 3) + b"\n")
    assert out == b"400 request%20longer%20than%208192%20bytes\n"
    await still_serves(ports)
