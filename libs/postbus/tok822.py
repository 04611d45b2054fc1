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

import re
from typing import Final

ATOM: Final = "atom"
QSTRING: Final = "qstring"
DOMLIT: Final = "domlit"
COMMENT: Final = "comment"

Token = tuple[str, str]

OPERATORS: Final = frozenset("|%!()<>@,;:\\\".[]")
_WORDS: Final = frozenset({ATOM, QSTRING, DOMLIT, COMMENT})
_BLANKS: Final = " \t\r\n"
#: An atom's characters (no blank, operator or backslash): the common case in one step.
_ATOM_RUN: Final = re.compile(r'[^ \t\r\n|%!()<>@,;:\\".\[\]]+')
#: A character that makes an atom's text a quoted string (blank, control, operator).
NEEDS_QUOTE: Final = re.compile(r'[\x00-\x1f\x7f |%!()<>@,;:\\".\[\]]')


def _collect(text: str, i: int, stop: str | None) -> tuple[str, int]:
    """Characters from ``i`` until ``stop`` (an atom when None); backslash escapes
    the next character; blanks inside read as one space (≈ COLLECT)."""
    if stop is None:  # the common atom: one regex step, unless a backslash follows
        run = _ATOM_RUN.match(text, i)
        if run is not None and (run.end() >= len(text) or text[run.end()] != "\\"):
            return run.group(), run.end()
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
            tokens.append((QSTRING if NEEDS_QUOTE.search(value) else ATOM, value))
    return tokens


def internalize(tokens: list[Token], *, spaces: bool = True) -> str:
    """Tokens back to the internal (unquoted) string (≈ tok822_internalize()).

    ``spaces=False``: the members of one address node, which Postfix joins
    without blanks (tok822_append_space() adds none inside an address)."""
    out: list[str] = []
    for index, (kind, text) in enumerate(tokens):
        out.append(f"[{text}]" if kind == DOMLIT else text)
        if (spaces and index + 1 < len(tokens) and kind in _WORDS
                and tokens[index + 1][0] in _WORDS):
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


def quote_822_local(address: str, *, bare: bool = False) -> str:
    """Quote the local part when it is not a dot-string (≈ quote_822_local()).

    A source route (``@a,@b:``) is left in front; the local part ends at
    the last ``@``, or with ``bare`` (a local part alone) at the end.
    """
    start = address.index(":") + 1 if address.startswith("@") and ":" in address else 0
    at = -1 if bare else address.rfind("@", start)
    end = at if at >= 0 else len(address)
    local = address[start:end]
    if _dot_string(local):
        return address
    quoted = "".join("\\" + ch if ch in '"\\\r' else ch for ch in local)
    return f'{address[:start]}"{quoted}"{address[end:]}'


def unquote_822_local(address: str) -> str:
    """Remove the quoting of the local part (≈ unquote_822_local()).

    Quotes and backslashes go up to the last unquoted ``@``; the domain
    after it is left as it is, and so is a source route in front."""
    start = address.index(":") + 1 if address.startswith("@") and ":" in address else 0
    out: list[str] = list(address[:start])
    in_quote = False
    bare_at = -1
    bare_src = 0
    i, n = start, len(address)
    while i < n:
        ch = address[i]
        if ch == '"':
            in_quote = not in_quote
            i += 1
            continue
        if ch == "@":
            if not in_quote:
                bare_at, bare_src = len(out), i
        elif ch == "\\":
            if i + 1 >= n:
                i += 1
                continue
            i += 1
            ch = address[i]
        out.append(ch)
        i += 1
    text = "".join(out)
    return text[:bare_at] + address[bare_src:] if bare_at >= 0 else text
