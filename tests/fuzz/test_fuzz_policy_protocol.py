"""Fuzzing the policy protocol reader (postbus.policy_protocol).

For any bytes, the reader yields requests and stops at the end of the input
or with one PolicyProtocolError whose text is a printable log line; a
request never holds more than MAX_ATTRIBUTES attributes, and within the
limits it is exactly what a plain line-by-line reading gives.  Requests
written with encode_attributes read back as they were.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from postbus.policy_protocol import (
    MAX_ATTRIBUTES,
    MAX_LINE,
    MAX_REQUEST,
    PolicyIdle,
    PolicyProtocolError,
    encode_attributes,
    read_attributes,
)
from tests.fuzz.streams import read_all

PIECES = [b"\n", b"\r\n", b"=", b"\r", b"request=smtpd_access_policy\n", b"sender=a@b\n",
          b"\xff", b"\xc3", b"\x00", b"a", b"==", b"\n\n"]
policy_bytes = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=20)),
                        max_size=30).map(b"".join)


async def _read(reader: asyncio.StreamReader) -> dict[str, str] | None:
    return await read_attributes(reader, idle_timeout=5, timeout=5, peer="127.0.0.1:1")


def _reference(data: bytes) -> tuple[list[dict[str, str]], bool]:
    """Requests by the letter of the protocol, without limits; and whether it ends in error."""
    requests: list[dict[str, str]] = []
    current: dict[str, str] = {}
    *lines, rest = data.split(b"\n")
    for line in lines:
        line = line.removesuffix(b"\r")
        if not line:
            requests.append(current)
            current = {}
            continue
        name, eq, value = line.partition(b"=")
        if not eq:
            return requests, True
        current.setdefault(name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    return requests, bool(current or rest)


@given(policy_bytes)
def test_any_bytes_read_as_the_protocol_says(data: bytes) -> None:
    out = read_all(data, _read, limit=MAX_LINE)
    error = out[-1] if out and isinstance(out[-1], BaseException) else None
    requests = out[:-1] if error else out
    assert error is None or (type(error) is PolicyProtocolError and str(error).isprintable())
    assert (requests, error is not None) == _reference(data)


@given(st.binary(max_size=300), st.sampled_from([MAX_LINE, 2**16, 100]))
def test_any_bytes_any_reader_limit(data: bytes, limit: int) -> None:
    for result in read_all(data, _read, limit=limit):
        if isinstance(result, BaseException):
            assert isinstance(result, PolicyProtocolError) and not isinstance(result, PolicyIdle)
            assert str(result).isprintable()
        else:
            assert len(result) <= MAX_ATTRIBUTES
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.items())


_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\n\r\0")
names = st.text(_chars, min_size=1, max_size=20).filter(lambda n: "=" not in n)
values = st.text(_chars, max_size=60)
requests = st.dictionaries(names, values, max_size=30)


@given(st.lists(requests, min_size=1, max_size=4))
def test_encoded_requests_read_back(sent: list[dict[str, str]]) -> None:
    data = b"".join(encode_attributes(r) for r in sent)
    assert read_all(data, _read, limit=MAX_LINE) == sent


def _outcome(data: bytes) -> Any:
    out = read_all(data, _read, limit=MAX_LINE)
    return "refused" if out and isinstance(out[-1], PolicyProtocolError) else out


@given(st.integers(MAX_LINE - 3, MAX_LINE + 3))
def test_line_limit(size: int) -> None:
    line = b"a=" + b"x" * (size - 3) + b"\n"  # size bytes, newline included
    assert _outcome(line + b"\n") == ("refused" if size > MAX_LINE else [{"a": "x" * (size - 3)}])


@given(st.integers(MAX_ATTRIBUTES - 3, MAX_ATTRIBUTES + 3))
def test_attribute_limit(count: int) -> None:
    data = b"".join(b"a%d=1\n" % i for i in range(count)) + b"\n"
    expected = "refused" if count > MAX_ATTRIBUTES else [{f"a{i}": "1" for i in range(count)}]
    assert _outcome(data) == expected


@given(st.integers(-3, 3), st.integers(2000, MAX_LINE - 200))
def test_request_size_limit(delta: int, line_size: int) -> None:
    """Lines of ``line_size`` bytes then a pad line, ``MAX_REQUEST + delta`` bytes in all."""
    count = (MAX_REQUEST - 100) // line_size  # the pad line is then 96..MAX_LINE-97 bytes
    lines = [b"a%02d=%s\n" % (i, b"x" * (line_size - 5)) for i in range(count)]
    pad = MAX_REQUEST + delta - sum(map(len, lines)) - 1  # the empty line is the last byte
    lines.append(b"p=" + b"y" * (pad - 3) + b"\n")
    data = b"".join(lines) + b"\n"
    assert len(data) == MAX_REQUEST + delta
    outcome = _outcome(data)
    if delta > 0:
        assert outcome == "refused"
    else:
        assert len(outcome) == 1 and len(outcome[0]) == count + 1


@given(policy_bytes)
def test_whole_request_reads_as_line_by_line(data: bytes) -> None:
    """A server's reader (limit >= MAX_REQUEST) reads the rest of a request in one piece
    after an LF-only first line: the same requests, or a clear error for a client that
    mixes LF and CRLF lines where the boundary would be lost."""
    out = read_all(data, _read, limit=MAX_REQUEST)
    error = out[-1] if out and isinstance(out[-1], BaseException) else None
    requests = out[:-1] if error else out
    assert error is None or (type(error) is PolicyProtocolError and str(error).isprintable())
    expected, failed = _reference(data)
    if error is not None and str(error).startswith("mixed LF and CRLF line endings"):
        assert requests == expected[:len(requests)]
    else:
        assert (requests, error is not None) == (expected, failed)
