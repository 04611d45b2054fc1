"""Netstrings (≈ netstring.c), the framing of Postfix's socketmap protocol.

A netstring is ``<decimal length>:<bytes>,``, e.g. ``12:hello world!,``.
:func:`encode` frames bytes; :func:`read_netstring` reads one from an
asyncio stream with a size limit, raising :class:`NetstringError` for a
malformed frame and ``asyncio.IncompleteReadError`` for a clean close
before a frame started.  Both socketmap client and server use these.
"""

from __future__ import annotations

import asyncio

__all__ = ["MAX_LENGTH_DIGITS", "NetstringError", "encode", "read_netstring"]

#: A length longer than this many digits is refused before it is parsed.
MAX_LENGTH_DIGITS = 10


class NetstringError(Exception):
    """A malformed or oversized netstring (≈ NETSTRING_ERR_FORMAT / _SIZE)."""


def encode(data: bytes) -> bytes:
    """Frame ``data`` as a netstring."""
    return b"%d:%s," % (len(data), data)


async def read_netstring(
    reader: asyncio.StreamReader,
    max_length: int,
    *,
    idle_timeout: float | None = None,
    timeout: float | None = None,
) -> bytes:
    """Read one netstring of at most ``max_length`` bytes of payload.

    Raises ``asyncio.IncompleteReadError`` with empty ``partial`` when the
    peer closed before sending anything (a normal end of session), and
    :class:`NetstringError` for anything else that is not a netstring:
    a non-digit in the length, a length over ``max_length``, a missing
    ``,`` or a close in the middle of a frame.  A server passes the
    timeouts: ``idle_timeout`` for the first byte (``TimeoutError``: the
    peer was silent, no frame lost), ``timeout`` from there to the ``,``
    (NetstringError: a half-sent frame).  None means no limit.
    """
    async with asyncio.timeout(idle_timeout):
        first = await reader.readexactly(1)
    try:
        async with asyncio.timeout(timeout):
            return await _read_frame(reader, first, max_length)
    except TimeoutError:
        raise NetstringError(f"timeout after {timeout:g}s in the middle of a netstring") from None


async def _read_frame(reader: asyncio.StreamReader, ch: bytes, max_length: int) -> bytes:
    digits = b""
    while ch != b":":
        if not ch.isdigit():
            raise NetstringError(f"unexpected character {ch!r} in netstring length")
        digits += ch
        if len(digits) > MAX_LENGTH_DIGITS:
            raise NetstringError("netstring length has too many digits")
        try:
            ch = await reader.readexactly(1)
        except asyncio.IncompleteReadError as exc:
            raise NetstringError("unexpected end of input in netstring length") from exc
    if not digits:
        raise NetstringError("netstring without length")
    length = int(digits)
    if length > max_length:
        raise NetstringError(f"netstring length {length} exceeds limit {max_length}")
    try:
        data = await reader.readexactly(length + 1)
    except asyncio.IncompleteReadError as exc:
        raise NetstringError("unexpected end of input in netstring data") from exc
    if data[-1:] != b",":
        raise NetstringError("netstring does not end in ','")
    return data[:-1]
