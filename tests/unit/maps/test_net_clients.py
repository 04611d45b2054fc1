"""Codecs and clients of the network table types, against scripted loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from postbus.maps import netstring
from postbus.maps.table import TableRetry, open_table
from postbus.maps.types.tcp import hex_quote, hex_unquote


@pytest.mark.parametrize("text, quoted", [
    ("plain@example.com", "plain@example.com"),
    ("a b", "a%20b"),
    ("100%", "100%25"),
    ("tab\there", "tab%09here"),
    ("ü", "%C3%BC"),
    ("\x7f", "%7F"),
])
def test_hex_quote_round_trip(text: str, quoted: str) -> None:
    assert hex_quote(text) == quoted
    assert hex_unquote(quoted) == text
    assert hex_unquote(quoted.lower()) == text


@pytest.mark.parametrize("bad", ["%", "%2", "%zz", "a%g0"])
def test_hex_unquote_rejects_bad_escapes(bad: str) -> None:
    with pytest.raises(ValueError):
        hex_unquote(bad)


async def _read(data: bytes, limit: int = 100) -> bytes:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await netstring.read_netstring(reader, limit)


async def test_netstring_codec() -> None:
    assert netstring.encode(b"hello world!") == b"12:hello world!,"
    assert await _read(b"12:hello world!,") == b"hello world!"
    assert await _read(b"0:,") == b""
    with pytest.raises(asyncio.IncompleteReadError):
        await _read(b"")
    for bad in (b"x:", b"5:abc", b"3:abc;", b"1000:a", b"12345678901:", b"1"):
        with pytest.raises(netstring.NetstringError):
            await _read(bad)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[bytes], asyncio.Future[int]]]:
    """Start a server that answers every connection's first request with fixed bytes."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield lambda answer: asyncio.ensure_future(start(answer))
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("answer, result", [
    (b"5:OK hi,", "hi"),
    (b"9:NOTFOUND ,", None),
    (b"2:OK,", None),  # OK without a value: Postfix returns no result
    (b"8:TEMP bad,", TableRetry),
    (b"7:TIMEOUT,", TableRetry),
    (b"9:PERM nope,", TableRetry),
    (b"5:WHAT?,", TableRetry),
    (b"garbage", TableRetry),
    (b"", TableRetry),
])
async def test_socketmap_client_replies(scripted, answer: bytes, result: object) -> None:  # type: ignore[no-untyped-def]
    port = await scripted(answer)
    table = open_table(f"socketmap:inet:127.0.0.1:{port}:name")
    if result is TableRetry:
        with pytest.raises(TableRetry):
            await table.lookup("key")
    else:
        assert await table.lookup("key") == result
    table.pool.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("answer, result", [
    (b"200 a%20b\n", "a b"),
    (b"500 not found\n", None),
    (b"400 try later\n", TableRetry),
    (b"300 what\n", TableRetry),
    (b"200 bad%zz\n", TableRetry),
    (b"20x\n", TableRetry),
    (b"200 " + b"a" * 5000 + b"\n", TableRetry),
    (b"200 no newline", TableRetry),
])
async def test_tcp_client_replies(scripted, answer: bytes, result: object) -> None:  # type: ignore[no-untyped-def]
    port = await scripted(answer)
    table = open_table(f"tcp:127.0.0.1:{port}")
    if result is TableRetry:
        with pytest.raises(TableRetry):
            await table.lookup("key")
    else:
        assert await table.lookup("key") == result
    table.pool.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", ["socketmap:inet:127.0.0.1:1", "socketmap:nowhere:x:name",
                                  "socketmap:inet:host:notaport:name", "tcp:host", "tcp:h:99999",
                                  "proxy:", "proxy:nocolon", "proxy:proxy:hash:/x"])
async def test_bad_specs_fail_every_lookup(spec: str) -> None:
    with pytest.raises(TableRetry):
        await open_table(spec).lookup("key")


async def test_unreachable_servers_are_retry() -> None:
    from postbus.servers import free_port

    port = free_port()
    for spec in (f"socketmap:inet:127.0.0.1:{port}:name", f"tcp:127.0.0.1:{port}",
                 "socketmap:unix:/nonexistent/socket:name"):
        with pytest.raises(TableRetry):
            await open_table(spec).lookup("key")
