"""Real Postfix ``postmap -q`` reads Postbus tables through socketmap and tcp_table.

The same keys go through the real postmap (socketmap: and tcp: clients of
Postfix 3.7) and through our own clients; both must agree with the HTTP
lookup.  Skipped where Postfix is not installed.  Bad input on the wire
gets a protocol error reply or a clean close, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from postbus.maps.table import TableRetry, open_table
from tests.integration.maps_api.conftest import POSTMAP, MapsApi, postmap_q

pytestmark = pytest.mark.integration

TABLE = {
    "user@example.com": "user1",
    "Mixed@Example.COM": "mixed",
    "@example.org": "catchall@example.net",
    "user+ext@example.net": "extension",
    "2001:db8::1": "v6 host",
    "100%": "per cent, % and spaces",
    "ünïcödé@exämple.de": "utf8 välue",
    "key with spaces": "value\twith tab",
}
KEYS = [*TABLE, "USER@EXAMPLE.COM", "mixed@example.com", "nobody@example.com", "@EXAMPLE.ORG",
        "user@example.net", "2001:DB8::1", "ÜNÏCÖDÉ@EXÄMPLE.DE", "a%20b", "x y z", "postmaster"]


def _upload(api: MapsApi, tmp_path: Path) -> str:
    spec = f"hash:{tmp_path}/virtual"
    r = httpx.put(f"{api.url}/v1/tables/{spec}", json=TABLE, headers=api.headers())
    assert r.status_code == 200, r.text
    return spec


def _http(api: MapsApi, spec: str, key: str) -> str | None:
    r = httpx.get(f"{api.url}/v1/tables/{spec}/lookup", params={"key": key})
    assert r.status_code in (200, 404), r.text
    return r.json().get("value")


@pytest.mark.skipif(POSTMAP is None, reason="postmap (Postfix) is not installed")
@pytest.mark.parametrize("proto", ["socketmap", "tcp"])
def test_real_postmap_reads_postbus_tables(maps_api: MapsApi, tmp_path: Path,
                                           postfix_conf: Path, proto: str) -> None:
    spec = _upload(maps_api, tmp_path)
    client = (f"socketmap:inet:127.0.0.1:{maps_api.socketmap_port}:virtual" if proto == "socketmap"
              else f"tcp:127.0.0.1:{maps_api.tcp_port}")
    for key in KEYS:
        expected = _http(maps_api, spec, key)
        if proto == "tcp" and expected is None:
            # the tcp server answers from postbus_maps_api_tcp_maps: virtual, then aliases
            expected = _http(maps_api, f"texthash:{tmp_path}/aliases", key)
        proc = postmap_q(postfix_conf, key, client)
        assert proc.returncode == (0 if expected is not None else 1), (key, proc.stderr)
        assert proc.stdout == (f"{expected}\n" if expected is not None else ""), key
        assert "warning" not in proc.stderr and "fatal" not in proc.stderr, proc.stderr


@pytest.mark.skipif(POSTMAP is None, reason="postmap (Postfix) is not installed")
def test_real_postmap_socketmap_names_and_errors(maps_api: MapsApi, tmp_path: Path,
                                                 postfix_conf: Path) -> None:
    port = maps_api.socketmap_port
    # a main.cf parameter name: its (approved) tables, first match
    proc = postmap_q(postfix_conf, "Postmaster",
                     f"socketmap:inet:127.0.0.1:{port}:relay_recipient_maps")
    assert (proc.returncode, proc.stdout) == (0, "root\n")
    # an unknown name is a table error for Postfix, never "not found"
    proc = postmap_q(postfix_conf, "x", f"socketmap:inet:127.0.0.1:{port}:nosuchtable")
    assert proc.returncode != 0 and "permanent error: no table named nosuchtable" in proc.stderr
    # a parameter that names a table nobody approved is refused
    proc = postmap_q(postfix_conf, "x", f"socketmap:inet:127.0.0.1:{port}:myhostname")
    assert proc.returncode != 0 and "permanent error" in proc.stderr


async def test_postbus_clients_read_their_own_server(maps_api: MapsApi, tmp_path: Path) -> None:
    spec = _upload(maps_api, tmp_path)
    sock = open_table(f"socketmap:inet:127.0.0.1:{maps_api.socketmap_port}:virtual")
    tcp = open_table(f"tcp:127.0.0.1:{maps_api.tcp_port}")
    assert not sock.fixed and not tcp.fixed  # pattern tables, as in Postfix
    for key in KEYS:
        expected = _http(maps_api, spec, key)
        assert await sock.lookup(key) == expected, key
        if expected is not None:
            assert await tcp.lookup(key) == expected, key
    bad = open_table(f"socketmap:inet:127.0.0.1:{maps_api.socketmap_port}:nosuch")
    with pytest.raises(TableRetry, match="permanent"):
        await bad.lookup("x")
    for table in (sock, tcp, bad):
        table.pool.close()  # type: ignore[attr-defined]


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("data, reply", [
    (b"abc", b"PERM protocol error: unexpected character"),
    (b"99999999999:x", b"PERM protocol error: netstring length has too many digits"),
    (b"200000:x", b"PERM protocol error: netstring length 200000 exceeds limit"),
    (b"3:abcX", b"PERM protocol error: netstring does not end in ','"),
    (b"10:abc", b"PERM protocol error: unexpected end of input in netstring data"),
    (b":", b"PERM protocol error: netstring without length"),
    (b"7:nospace,", b"PERM bad request"),
    (b"", b""),
])
async def test_socketmap_bad_input(maps_api: MapsApi, data: bytes, reply: bytes) -> None:
    out = await asyncio.to_thread(_exchange, maps_api.socketmap_port, data)
    assert out.partition(b":")[2].startswith(reply) if reply else out == b"", out
    # the server still serves
    good = await asyncio.to_thread(
        _exchange, maps_api.socketmap_port, b"22:relay_recipient_maps x,"
    )
    assert good == b"9:NOTFOUND ,"


@pytest.mark.parametrize("data, reply", [
    (b"get %zz\n", b"400 bad%20%25XX%20encoding%20in%20request\n"),
    (b"put a b\n", b"400 unsupported%20request"),
    (b"get\n", b"400 unsupported%20request"),
    (b"get " + b"a" * 10000 + b"\n", b"400 request%20longer%20than%208192%20bytes\n"),
    (b"get nothing-here\n", b"500 not%20found\n"),
    (b"get postmaster\nget POSTMASTER\r\n", b"200 root\n200 root\n"),
    (b"get partial-line-without-newline", b"400 unexpected%20end%20of%20input%20in%20request\n"),
    (b"get " + b"a" * 8188 + b"\n", b"500 not%20found\n"),  # 8192 bytes: at the limit
    (b"get " + b"a" * 8189 + b"\n", b"400 request%20longer%20than%208192%20bytes\n"),
    (b"g" + b"a" * 20000, b"400 request%20longer%20than%208192%20bytes\n"),
])
async def test_tcp_bad_input(maps_api: MapsApi, tmp_path: Path, data: bytes, reply: bytes) -> None:
    _upload(maps_api, tmp_path)
    out = await asyncio.to_thread(_exchange, maps_api.tcp_port, data)
    assert out.startswith(reply), out
    good = await asyncio.to_thread(_exchange, maps_api.tcp_port, b"get postmaster\n")
    assert good == b"200 root\n"
