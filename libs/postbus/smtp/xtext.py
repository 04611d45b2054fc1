"""xtext both ways (RFC 3461 4; ≈ Postfix's xtext.c) and RFC 6533's unitext escapes.

ENVID=, ORCPT=rfc822; and the AUTH= of MAIL FROM carry their values in
xtext: every octet outside ``!``..``~`` and ``+`` ``=`` themselves as
``+HH`` (upper-case hex). Encoding works on the UTF-8 octets, as Postfix's
xtext_quote() does; decoding gives UTF-8 text back, or one character per
octet when the octets are not UTF-8, so that nothing the peer sent is lost.
"""

from __future__ import annotations

import re

__all__ = ["decode", "encode", "uxtext_decode", "valid"]

_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
_VALID = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*")
_UXTEXT = re.compile(r"\\x\{([^}]*)\}")
_PLAIN = frozenset(chr(c) for c in range(33, 127)) - {"+", "="}


def encode(text: str) -> str:
    """``a+b=c`` -> ``a+2Bb+3Dc``; non-ASCII as its UTF-8 octets."""
    if all(c in _PLAIN for c in text):
        return text
    return "".join(
        c if c in _PLAIN else "".join(f"+{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
        for c in text
    )


def valid(text: str) -> bool:
    """Whether ``text`` is well-formed xtext (a ``+`` takes two hex digits; no ``=``)."""
    return _VALID.fullmatch(text) is not None


def decode(text: str) -> str:
    """``+HH`` escapes back to octets, read as UTF-8 (Latin-1 when not UTF-8)."""
    if "+" not in text:
        return text
    raw = _HEX.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def uxtext_decode(text: str) -> str | None:
    """RFC 6533 ``\\x{HEX}`` escapes in UTF-8 text (≈ uxtext_unquote()); None when bad."""
    out: list[str] = []
    pos = 0
    for match in _UXTEXT.finditer(text):
        digits = match.group(1)
        if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits) \
                or int(digits, 16) > 0x10FFFF or 0xD800 <= int(digits, 16) <= 0xDFFF:
            return None
        out += [text[pos:match.start()], chr(int(digits, 16))]
        pos = match.end()
    rest = text[pos:]
    if "\\x{" in rest:
        return None  # an escape without its closing brace
    return "".join(out) + rest
