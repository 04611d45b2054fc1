"""Fuzzing the socketmap netstring reader and the tcp_table request handling.

netstring: any bytes give frames of at most the limit, then a clean end or
one NetstringError; frames are what a plain reading of the format gives;
any payloads framed with encode() read back.  tcp_table: %XX quoting
round-trips, any request line gets exactly one well-formed reply line, and
the line reader never returns more than MAX_REQUEST bytes.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maps_api import tcp_table
from maps_api.tables import TableService
from postbus.config.loader import Config
from postbus.maps import netstring
from postbus.maps.types.tcp import MAX_LINE, hex_quote, hex_unquote
from tests.fuzz.streams import read_all

LIMIT = 64

# -- netstrings ------------------------------------------------------------------

_PIECES = [b":", b",", b"0", b"1", b"5", b"9", b"10:", b"3:abc,", b"0:,", b"99999999999", b"x"]
netstring_bytes = st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=12),
                                     st.binary(max_size=LIMIT + 5).map(netstring.encode)),
                           max_size=12).map(b"".join)


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await netstring.read_netstring(reader, LIMIT, idle_timeout=5, timeout=5)
    except asyncio.IncompleteReadError as exc:
        assert exc.partial == b""  # only a clean end between frames
        return None


def _reference(data: bytes) -> tuple[list[bytes], bool]:
    """Frames by the letter of the format (and the limit); whether it ends in error."""
    frames = []
    while data:
        m = re.match(rb"([0-9]{1,10}):", data)
        if not m or int(m.group(1)) > LIMIT:
            return frames, True
        end = m.end() + int(m.group(1))
        if data[end:end + 1] != b",":
            return frames, True
        frames.append(data[m.end():end])
        data = data[end + 1:]
    return frames, False


@given(netstring_bytes)
def test_any_bytes_read_as_netstrings(data: bytes) -> None:
    out = read_all(data, _read_frame)
    error = out[-1] if out and isinstance(out[-1], BaseException) else None
    assert error is None or type(error) is netstring.NetstringError, repr(error)
    frames = out[:-1] if error else out
    assert all(isinstance(f, bytes) and len(f) <= LIMIT for f in frames)
    assert (frames, error is not None) == _reference(data)


@given(st.lists(st.binary(max_size=LIMIT), max_size=6))
def test_framed_payloads_read_back(payloads: list[bytes]) -> None:
    data = b"".join(map(netstring.encode, payloads))
    assert read_all(data, _read_frame) == payloads


# -- tcp_table ---------------------------------------------------------------------

#: What table keys and values are: text decoded from bytes with surrogateescape.
table_text = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
                       st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")))


@given(table_text)
def test_hex_quote_round_trips(text: str) -> None:
    quoted = hex_quote(text)
    assert re.fullmatch(r"[\x21-\x7e]*", quoted)
    assert hex_unquote(quoted) == text
    assert hex_unquote(quoted.encode("ascii")) == text


@given(st.binary(max_size=60))
def test_hex_unquote_any_bytes(raw: bytes) -> None:
    try:
        text = hex_unquote(raw)
    except ValueError:
        assert re.search(rb"%(?![0-9A-Fa-f]{2})", raw)
        return
    assert hex_unquote(hex_quote(text)) == text


TABLE = {"postmaster": "root", "a%b": "per cent % value", "ünï": "välue\twith tab"}


@pytest.fixture(scope="module")
def tables() -> TableService:
    inline = ", ".join("{%s=%s}" % kv for kv in TABLE.items())  # noqa: UP031
    return TableService(Config.from_text(f"postbus_maps_api_tcp_maps = inline:{{ {inline} }}\n"))


_REPLY = re.compile(rb"(200|400|500) [\x21-\x7e]*\n")


@given(line=st.one_of(st.binary(max_size=80),
                      st.tuples(st.sampled_from([b"get ", b"GET ", b"put ", b"get", b""]),
                                st.binary(max_size=40)).map(b"".join),
                      st.sampled_from(list(TABLE)).map(lambda k: b"get " + hex_quote(k).encode())))
def test_any_request_line_gets_one_reply_line(tables: TableService, line: bytes) -> None:
    line = line.replace(b"\n", b"")  # the server answers lines without their newline
    reply = asyncio.run(tcp_table.answer(tables, line))
    assert _REPLY.fullmatch(reply) and len(reply) <= MAX_LINE + 1, reply
    verb, sep, arg = line.partition(b" ")
    if verb != b"get" or not sep:
        assert reply.startswith(b"400 unsupported%20request")
        return
    try:
        key = hex_unquote(arg)
    except ValueError:
        assert reply == b"400 bad%20%25XX%20encoding%20in%20request\n"
        return
    if key in TABLE:
        assert reply == f"200 {hex_quote(TABLE[key])}\n".encode()
    else:
        assert reply[:4] in (b"200 ", b"500 ")  # a folded key may still match


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    return await tcp_table.read_request(reader, 5, 5)


@given(st.lists(st.one_of(st.binary(max_size=30), st.just(b"\n"),
                          st.integers(tcp_table.MAX_REQUEST - 2, tcp_table.MAX_REQUEST + 2)
                          .map(lambda n: b"g" * n + b"\n")), max_size=6).map(b"".join),
       st.sampled_from([tcp_table.MAX_REQUEST, 2**16]))
def test_request_lines_are_bounded(data: bytes, limit: int) -> None:
    out = read_all(data, _read_line, limit=limit)
    expected: list[bytes | str] = []
    *lines, rest = data.split(b"\n")
    for line in lines:
        if len(line) > tcp_table.MAX_REQUEST:
            expected.append("refused")
            break
        expected.append(line.rstrip(b"\r"))
    else:
        if rest:
            expected.append("refused")  # cut short
    got = ["refused" if type(x).__name__ == "_BadLine" else x for x in out]
    assert got == expected
