"""RFC 822 address tokens as Postfix sees them (≈ tok822_parse.c, quote_822_local.c).

The address resolver (:mod:`postbus.resolve`) works on a flat token list,
not on strings, because routing operators may hide in quoted local parts
and the rewrite rules (``site!user``, ``user%domain``) move tokens around.
Beyond RFC 822, ``%``, ``!`` and ``|`` are operators, as in Postfix;
8-bit text is left alone.

A token is ``(kind, text)``: kind is ATOM, QSTRING (text without the
quotes and backslashes), DOMLIT (text without the brackets), COMMENT (kept
in its external form) or the operator character itself.
"""

from __future__ import annotations

from typing import Final

ATOM: Final = "atom"
QSTRING: Final = "qstring"
DOMLIT: Final = "domlit"
COMMENT: Final = "comment"

Token = tuple[str, str]

OPERATORS: Final = frozenset("|%!()<>@,;:\\\".[]")
_WORDS: Final = frozenset({ATOM, QSTRING, DOMLIT, COMMENT})
_BLANKS: Final = " \t\r\n"


def _collect(text: str, i: int, stop: str | None) -> tuple[str, int]:
    """Characters from ``i`` until ``stop`` (an atom when None); backslash escapes
    the next character; blanks inside read as one space (≈ COLLECT)."""
    out: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 1
            if i >= n:
                break
            ch = text[i]
        elif ch == stop if stop is not None else (ch in _BLANKS or ch in OPERATORS):
            break
        out.append(" " if ch in _BLANKS else ch)
        i += 1
    return "".join(out), i


def _comment(text: str, i: int) -> tuple[str, int]:
    out = ["("]
    level = 1
    n = len(text)
    while i < n:
        ch = text[i]
        out.append(ch)
        i += 1
        if ch == "(":
            level += 1
        elif ch == ")":
            level -= 1
            if level == 0:
                break
        elif ch == "\\" and i < n:
            out.append(text[i])
            i += 1
    return "".join(out), i


def scan(text: str) -> list[Token]:
    """Tokenize an address (≈ tok822_scan())."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        i += 1
        if ch in _BLANKS:
            continue
        if ch == "(":
            value, i = _comment(text, i)
            tokens.append((COMMENT, value))
        elif ch == "[":
            value, i = _collect(text, i, "]")
            tokens.append((DOMLIT, value))
            i += i < n
        elif ch == '"':
            value, i = _collect(text, i, '"')
            tokens.append((QSTRING, value))
            i += i < n
        elif ch != "\\" and ch in OPERATORS:
            tokens.append((ch, ch))
        else:
            value, i = _collect(text, i - 1, None)
            quoted = any(c == " " or ord(c) < 32 or c == "\x7f" or c in OPERATORS for c in value)
            tokens.append((QSTRING if quoted else ATOM, value))
    return tokens


def internalize(tokens: list[Token]) -> str:
    """Tokens back to the internal (unquoted) string (≈ tok822_internalize())."""
    out: list[str] = []
    for index, (kind, text) in enumerate(tokens):
        out.append(f"[{text}]" if kind == DOMLIT else text)
        if index + 1 < len(tokens) and kind in _WORDS and tokens[index + 1][0] in _WORDS:
            out.append(" ")
    return "".join(out)


def rfind(tokens: list[Token], kind: str) -> int:
    """Index of the last token of ``kind``, or -1."""
    for index in range(len(tokens) - 1, -1, -1):
        if tokens[index][0] == kind:
            return index
    return -1


def find(tokens: list[Token], kind: str, start: int = 0) -> int:
    """Index of the first token of ``kind`` at or after ``start``, or -1."""
    for index in range(start, len(tokens)):
        if tokens[index][0] == kind:
            return index
    return -1


def _dot_string(local: str) -> bool:
    """An RFC 822 dot-string; 8-bit text is left alone (≈ is_822_dot_string())."""
    if not local or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    return not any(
        ch == " " or ord(ch) < 32 or ch == "\x7f" or ch in '()<>@,;:\\"[]' for ch in local
    )


def quote_822_local(address: str) -> str:
    """Quote the local part when it is not a dot-string (≈ quote_822_local()).

    A source route (``@a,@b:``) is left in front; the local part ends at
    the last ``@``.
    """
    start = address.index(":") + 1 if address.startswith("@") and ":" in address else 0
    at = address.rfind("@", start)
    end = at if at >= 0 else len(address)
    local = address[start:end]
    if _dot_string(local):
        return address
    quoted = "".join("\\" + ch if ch in '"\\\r' else ch for ch in local)
    return f'{address[:start]}"{quoted}"{address[end:]}'
