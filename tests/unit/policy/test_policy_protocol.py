"""postbus.policy_protocol: requests read within limits, replies written as Postfix reads them."""

from __future__ import annotations

import asyncio

import pytest

from postbus.policy_protocol import (
    MAX_LINE,
    MAX_REQUEST,
    PolicyIdle,
    PolicyProtocolError,
    encode_attributes,
    encode_reply,
    read_attributes,
)


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_LINE)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def _read(reader: asyncio.StreamReader, idle: float = 5, timeout: float = 5
                ) -> dict[str, str] | None:
    return await read_attributes(reader, idle_timeout=idle, timeout=timeout, peer="peer:1")


async def test_requests_one_after_another() -> None:
    reader = _reader(b"request=smtpd_access_policy\nsender=a@b\n\nrecipient=c@d\r\n\r\n")
    assert await _read(reader) == {"request": "smtpd_access_policy", "sender": "a@b"}
    assert await _read(reader) == {"recipient": "c@d"}
    assert await _read(reader) is None


async def test_first_instance_wins_and_values_keep_their_equals() -> None:
    reader = _reader(b"a=1\na=2\nb==x=\nc=\n\n")
    assert await _read(reader) == {"a": "1", "b": "=x=", "c": ""}


async def test_invalid_utf8_is_replaced() -> None:
    reader = _reader(b"sender=\xe9l\xe8ve@exa\xc3mple.com\n\xff=1\n\n")
    assert await _read(reader) == {"sender": "\ufffdl\ufffdve@exa\ufffdmple.com", "\ufffd": "1"}


@pytest.mark.parametrize("data, error", [
    (b"a=1\nnoequals\n\n", "missing value for string attribute noequals from peer:1"),
    (b"a=1\nb=2", "premature end-of-input on peer:1 while reading input attribute"),
    (b"a=" + b"x" * MAX_LINE + b"\n\n", "string length > 8192 characters from peer:1"),
    (b"".join(b"a%d=1\n" % i for i in range(101)) + b"\n",
     "attribute count exceeds limit 100 in input from peer:1"),
    (b"".join(b"a%d=%s\n" % (i, b"x" * 8000) for i in range(9)) + b"\n",
     "request size exceeds limit 65536 in input from peer:1"),
])
async def test_violations(data: bytes, error: str) -> None:
    with pytest.raises(PolicyProtocolError) as info:
        await _read(_reader(data))
    assert str(info.value).startswith(error)
    assert not isinstance(info.value, PolicyIdle)


async def test_idle_and_request_timeouts() -> None:
    with pytest.raises(PolicyIdle, match=r"^idle timeout after 0.05s from peer:1$"):
        await _read(_reader(b"", eof=False), idle=0.05)
    with pytest.raises(PolicyProtocolError, match=r"^timeout on peer:1 while reading"):
        await _read(_reader(b"a=1\n", eof=False), timeout=0.05)


async def test_a_request_trickling_in_is_timed_as_a_whole() -> None:
    reader = _reader(b"", eof=False)

    async def trickle() -> None:
        for _ in range(40):
            reader.feed_data(b"a=1\n")
            await asyncio.sleep(0.01)

    feeder = asyncio.create_task(trickle())
    with pytest.raises(PolicyProtocolError, match=r"^timeout on peer:1"):
        await _read(reader, idle=0.2, timeout=0.1)
    await feeder


def test_encode() -> None:
    assert encode_reply("DUNNO") == b"action=DUNNO\n\n"
    assert encode_reply("450 4.7.1 ünï") == "action=450 4.7.1 ünï\n\n".encode()
    assert encode_attributes({"request": "smtpd_access_policy", "sender": ""}) == (
        b"request=smtpd_access_policy\nsender=\n\n"
    )
    assert encode_attributes({}) == b"\n"
    for bad in ({"": "x"}, {"a=b": "x"}, {"a": "x\ny"}, {"a": "x\0"}, {"a": "x\r"},
                {"a": "x" * MAX_LINE}):
        with pytest.raises(ValueError):
            encode_attributes(bad)


async def test_encoded_requests_read_back() -> None:
    attrs = {"request": "smtpd_access_policy", "sender": "ünï@example.com", "x": "a=b"}
    assert await _read(_reader(encode_attributes(attrs))) == attrs


# A server's reader may hold a whole request: after an LF-only first line, the rest is
# read in one piece, with the same limits and the same messages.

def _big_reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_REQUEST)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_whole_requests_as_line_by_line() -> None:
    data = (b"request=smtpd_access_policy\nsender=a@b\n\na=1\n\nrecipient=c@d\r\nx=1\r\n\r\n"
            b"a=1\na=2\nb==x=\nc=\n\n" b"sender=\xe9l\n\xff=1\n\n")
    for make in (_reader, _big_reader):
        reader = make(data)
        assert await _read(reader) == {"request": "smtpd_access_policy", "sender": "a@b"}
        assert await _read(reader) == {"a": "1"}
        assert await _read(reader) == {"recipient": "c@d", "x": "1"}
        assert await _read(reader) == {"a": "1", "b": "=x=", "c": ""}
        assert await _read(reader) == {"sender": "\ufffdl", "\ufffd": "1"}
        assert await _read(reader) is None


@pytest.mark.parametrize("data, error", [
    (b"a=1\nnoequals\n\n", "missing value for string attribute noequals from peer:1"),
    (b"a=1\nb=2\n", "premature end-of-input on peer:1 while reading input attribute"),
    (b"a=1\nb=" + b"x" * MAX_LINE + b"\n\n", "string length > 8192 characters from peer:1"),
    (b"".join(b"a%d=1\n" % i for i in range(101)) + b"\n",
     "attribute count exceeds limit 100 in input from peer:1"),
    (b"a=1\n" + b"".join(b"a%d=%s\n" % (i, b"x" * 8000) for i in range(9)) + b"\n",
     "request size exceeds limit 65536 in input from peer:1"),
    (b"a=1\nb=" + b"x" * (2 * MAX_REQUEST),  # endless: stops at the limit, not at EOF
     "request size exceeds limit 65536 in input from peer:1"),
])
async def test_violations_of_whole_requests(data: bytes, error: str) -> None:
    with pytest.raises(PolicyProtocolError) as info:
        await _read(_big_reader(data, eof=len(data) < MAX_REQUEST), timeout=2)
    assert str(info.value).startswith(error)


async def test_mixed_line_endings_never_merge_requests() -> None:
    # an empty CRLF line right after an LF first line ends the request, as line by line
    reader = _big_reader(b"a=1\n\r\nb=2\n\n")
    assert await _read(reader) == {"a": "1"}
    assert await _read(reader) == {"b": "2"}
    # further in, the boundary would be lost: a clear error, not two requests as one
    with pytest.raises(PolicyProtocolError) as info:
        await _read(_big_reader(b"a=1\nb=2\r\n\r\nc=3\n\n"))
    assert str(info.value) == "mixed LF and CRLF line endings in input from peer:1"
