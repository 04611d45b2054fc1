"""The policy delegation protocol codec (≈ attr_scan_plain.c, attr_print_plain.c).

SMTPD_POLICY_README: a request is ``name=value`` lines ended by an empty
line; the reply is ``action=...`` and an empty line.  Both ends of the
protocol use this module: the policy server reads requests and writes
replies, the smtpd policy client writes requests and reads replies.

Postfix reads these lines without a length limit (the 4 * line_length_limit
check in attr_scan_plain_string() is compiled out) and keeps at most
ATTR_HASH_LIMIT (1024) attributes.  A server facing any client is stricter,
so a peer can never make us buffer without bound or wait forever:

* :data:`MAX_LINE` bytes per line (4 * Postfix's line_length_limit default
  of 2048, the limit attr_scan_plain.c would apply; Postfix's smtpd sends
  values that came through SMTP command lines of at most 2048 bytes);
* :data:`MAX_ATTRIBUTES` attributes per request (Postfix 3.7 smtpd sends about 33);
* :data:`MAX_REQUEST` bytes per request;
* an idle timeout before a request starts and a timeout for the whole
  request once it started (the server passes ``postbus_policy_max_idle``
  and ``postbus_policy_timeout``).

A violation raises :class:`PolicyProtocolError` whose text is the warning
to log (in Postfix's words where Postfix has them); the caller closes the
connection, since the framing is lost.  Values are decoded as UTF-8, with
invalid bytes replaced by U+FFFD (Postfix's printable() makes them ``?``):
bad bytes never crash a check.  As RECV_ATTR_HASH, the first instance of
a repeated attribute wins.  A trailing CR is dropped, for ``telnet``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_LINE",
    "MAX_REQUEST",
    "PolicyIdle",
    "PolicyProtocolError",
    "encode_attributes",
    "encode_reply",
    "read_attributes",
]

#: Bytes per ``name=value`` line, newline included (4 * line_length_limit).
MAX_LINE = 8192
#: Attributes per request (Postfix's ATTR_HASH_LIMIT is 1024; smtpd sends about 33).
MAX_ATTRIBUTES = 100
#: Bytes per request, every line and the empty line included.
MAX_REQUEST = 65536


class PolicyProtocolError(Exception):
    """Input that is not a policy request within the limits; the text is the warning."""


class PolicyIdle(PolicyProtocolError):
    """The peer sent nothing for ``idle_timeout`` between requests (not a warning)."""


async def read_attributes(
    reader: asyncio.StreamReader,
    *,
    idle_timeout: float,
    timeout: float,
    peer: str = "unknown",
    max_line: int = MAX_LINE,
    max_attributes: int = MAX_ATTRIBUTES,
    max_request: int = MAX_REQUEST,
) -> dict[str, str] | None:
    """Read one attribute list up to its empty line; None when the peer closed before it.

    ``idle_timeout`` bounds the wait for the first byte of a request
    (:class:`PolicyIdle`), ``timeout`` the time from that byte to the empty
    line.  The ``max_*`` bounds default to the module's; the reader's own
    limit should be at least ``max_line`` (a smaller one only makes long
    lines fail earlier).
    """
    try:
        async with asyncio.timeout(idle_timeout):
            first = await reader.readexactly(1)
    except TimeoutError:
        raise PolicyIdle(f"idle timeout after {idle_timeout:g}s from {peer}") from None
    except asyncio.IncompleteReadError:
        return None
    try:
        async with asyncio.timeout(timeout):
            return await _read_lines(reader, first, peer,
                                     (max_line, max_attributes, max_request))
    except TimeoutError:
        raise PolicyProtocolError(
            f"timeout on {peer} while reading input attribute"
        ) from None


async def _read_lines(reader: asyncio.StreamReader, first: bytes, peer: str,
                      limits: tuple[int, int, int]) -> dict[str, str]:
    """Line by line; once the first line shows a client that ends lines with LF only (as
    Postfix does) and the reader may buffer a whole request, the rest in one read."""
    max_line, max_attributes, max_request = limits
    attrs: dict[str, str] = {}
    size = count = 0
    block = getattr(reader, "_limit", 0) >= max_request
    while True:
        try:
            line = first + await reader.readuntil(b"\n") if first != b"\n" else first
        except asyncio.IncompleteReadError:
            raise _premature(peer) from None
        except asyncio.LimitOverrunError:
            line = b""  # too long: reported below
        first = b""
        if not line or len(line) > max_line:
            raise _too_long(max_line, peer)
        size += len(line)
        if size > max_request:
            raise _too_big(max_request, peer)
        text = line[:-1]
        if text.endswith(b"\r"):
            text = text[:-1]
            block = False
        if not text:
            return attrs
        count += 1
        _add(attrs, text, count, max_attributes, peer)
        if block:
            try:
                first = await reader.readexactly(1)
            except asyncio.IncompleteReadError:
                raise _premature(peer) from None
            if first == b"\n":
                return attrs
            if first != b"\r":  # else the next line may be an empty CRLF one: line by line
                return await _read_block(reader, first, attrs, size, count, limits, peer)
            block = False


async def _read_block(reader: asyncio.StreamReader, first: bytes, attrs: dict[str, str],
                      size: int, count: int, limits: tuple[int, int, int], peer: str
                      ) -> dict[str, str]:
    """The rest of a request after its first line, in one read up to the empty line.

    An empty CRLF line in it would have ended the request before: that client mixes
    line endings, and the request boundary is lost (an error, never two requests as one).
    """
    max_line, max_attributes, max_request = limits
    try:
        rest = first + await reader.readuntil(b"\n\n")
    except asyncio.IncompleteReadError as exc:
        if b"\n\r\n" in exc.partial:
            raise _mixed(peer) from None
        raise _premature(peer) from None
    except asyncio.LimitOverrunError:
        raise _too_big(max_request, peer) from None
    if b"\n\r\n" in rest:
        raise _mixed(peer)
    if size + len(rest) > max_request:
        raise _too_big(max_request, peer)
    body = rest[:-2]
    if len(body) >= max_line and any(len(t) >= max_line for t in body.split(b"\n")):
        raise _too_long(max_line, peer)
    # one decode for the block: a newline or "=" is never part of a UTF-8 sequence, so
    # this is what decoding each name and value gives
    for line in body.decode("utf-8", "replace").split("\n"):
        name, eq, value = line.removesuffix("\r").partition("=")
        if not eq:
            raise _missing(name, peer)
        count += 1
        if count > max_attributes:
            raise _too_many(max_attributes, peer)
        if name not in attrs:
            attrs[name] = value
    return attrs


def _add(attrs: dict[str, str], text: bytes, count: int, max_attributes: int,
         peer: str) -> None:
    name, eq, value = text.partition(b"=")
    if not eq:
        raise _missing(name.decode("utf-8", "replace"), peer)
    if count > max_attributes:
        raise _too_many(max_attributes, peer)
    attrs.setdefault(name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))


def _missing(name: str, peer: str) -> PolicyProtocolError:
    shown = "".join(c if c.isprintable() else "?" for c in name[:100])  # as printable()
    return PolicyProtocolError(f"missing value for string attribute {shown} from {peer}")


def _too_many(max_attributes: int, peer: str) -> PolicyProtocolError:
    return PolicyProtocolError(
        f"attribute count exceeds limit {max_attributes} in input from {peer}")


def _mixed(peer: str) -> PolicyProtocolError:
    return PolicyProtocolError(f"mixed LF and CRLF line endings in input from {peer}")


def _premature(peer: str) -> PolicyProtocolError:
    return PolicyProtocolError(
        f"premature end-of-input on {peer} while reading input attribute")


def _too_long(max_line: int, peer: str) -> PolicyProtocolError:
    return PolicyProtocolError(
        f"string length > {max_line} characters from {peer} while reading input attribute")


def _too_big(max_request: int, peer: str) -> PolicyProtocolError:
    return PolicyProtocolError(f"request size exceeds limit {max_request} in input from {peer}")


def encode_attributes(attrs: Mapping[str, str]) -> bytes:
    """``name=value`` lines and the empty line (≈ attr_print_plain()).

    ValueError for what the other end could not read back: an empty name,
    a ``=`` in a name, a newline or NUL anywhere, a line over :data:`MAX_LINE`.
    """
    text = "".join([f"{name}={value}\n" for name, value in attrs.items()])
    # one scan of the whole text for the common case; the attribute to blame when not
    if text.count("\n") != len(attrs) or "\r" in text or "\0" in text or any(
            not name or "=" in name for name in attrs):
        for name, value in attrs.items():
            if not name or "=" in name or _bad_chars(name) or _bad_chars(value):
                raise ValueError(f"attribute {name!r} cannot be sent as a policy attribute")
    out = text.encode("utf-8", "surrogateescape")
    if len(out) > MAX_LINE:
        for name, value in attrs.items():
            if len(f"{name}={value}\n".encode("utf-8", "surrogateescape")) > MAX_LINE:
                raise ValueError(f"attribute {name} is longer than {MAX_LINE} bytes")
    return out + b"\n"


def encode_reply(action: str) -> bytes:
    """The server's reply: ``action=...`` and the empty line."""
    return encode_attributes({"action": action})


def _bad_chars(text: str) -> bool:
    return "\n" in text or "\r" in text or "\0" in text
