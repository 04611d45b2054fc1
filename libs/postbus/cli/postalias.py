"""postbus postalias: build and query alias tables, as postalias(1).

An aliases(5) source line is ``name: value, value, ...``; a line starting
with whitespace continues the previous one.  Like postalias.c we tokenize
each logical line as RFC 822 text (≈ tok822_scan): the name is the text
before the first ``:`` in internal form (quotes removed), the value is the
rest in external form, so ``Joe,  "|/bin/prog arg" ,`` is stored as
``Joe, "|/bin/prog arg",``.  ``:include:/file`` stays in the value for
local delivery to expand.  A full build adds Sendmail's ``@: @`` and NIS's
``YP_LAST_MODIFIED`` / ``YP_MASTER_NAME`` entries, as postalias does.

The flags, storage and messages otherwise are postmap's (see postmap.py):
``postbus postalias /etc/aliases`` writes ``/etc/aliases.db`` whether or
not the system runs, and loads Redis when it does; ``-q -`` and ``-s``
print ``name:<TAB>value``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from postbus.cli.maptool import Options, Tool
from postbus.cli.maptool_session import run_tool
from postbus.config.loader import Config
from postbus.maps.table import fold_key, log
from postbus.maps.types._syntax import logical_lines

__all__ = ["POSTALIAS", "main", "parse_aliases"]

#: Single-character operators of tok822 (% and ! because not all MTAs are RFC 822 compliant).
OPCHARS = '|"(),.:;<>@[]%!'
ATOM, QSTRING, DOMLIT, COMMENT = "atom", "qstring", "domlit", "comment"
_NON_OPERATOR = (ATOM, QSTRING, COMMENT, DOMLIT)


@dataclass
class Token:
    type: str  # ATOM, QSTRING, DOMLIT, COMMENT, or the operator character
    text: str = ""


def _collect(s: str, i: int, stop: str) -> tuple[str, int]:
    """Characters up to one in ``stop`` (backslash escapes resolved, blanks to space)."""
    out: list[str] = []
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            i += 1
            if i >= len(s):
                break
            ch = s[i]
        elif ch in stop:
            break
        out.append(" " if ch in " \t\r\n" else ch)
        i += 1
    return "".join(out), i


def tok822_scan(s: str) -> list[Token]:
    """Split RFC 822 text into tokens (≈ tok822_scan_limit() without a limit)."""
    tokens: list[Token] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch.isspace():
            i += 1
        elif ch == "(":
            start, level = i, 0
            while i < len(s):
                if s[i] == "\\":
                    i += 1
                elif s[i] == "(":
                    level += 1
                elif s[i] == ")":
                    level -= 1
                    if level == 0:
                        i += 1
                        break
                i += 1
            tokens.append(Token(COMMENT, s[start:i]))
        elif ch in '["':
            text, i = _collect(s, i + 1, "]" if ch == "[" else '"')
            tokens.append(Token(DOMLIT if ch == "[" else QSTRING, text))
            i += 1  # the closing bracket or quote, when present
        elif ch in OPCHARS:
            tokens.append(Token(ch))
            i += 1
        else:
            text, i = _collect(s, i, OPCHARS + " \t\r\n\v\f")
            quote = any(c == " " or ord(c) < 32 or ord(c) == 127 or c in OPCHARS for c in text)
            tokens.append(Token(QSTRING if quote else ATOM, text))
    return tokens


def _space_after(tokens: list[Token], i: int) -> bool:
    if i + 1 >= len(tokens):
        return False
    tok, nxt = tokens[i], tokens[i + 1]
    if tok.type == "," or nxt.type == "<":
        return True
    return tok.type in _NON_OPERATOR and nxt.type in _NON_OPERATOR


def _quoted(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


def tok822_string(tokens: list[Token], external: bool) -> str:
    """Tokens back to text (≈ tok822_externalize() / tok822_internalize())."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type in (ATOM, COMMENT):
            out.append(tok.text)
        elif tok.type == QSTRING:
            out.append(f'"{_quoted(tok.text, chr(34) + chr(92) + chr(13) + chr(10))}"'
                       if external else tok.text)
        elif tok.type == DOMLIT:
            out.append(f"[{_quoted(tok.text, chr(92) + chr(13) + chr(10))}]"
                       if external else f"[{tok.text}]")
        elif tok.type == "<" and i + 1 < len(tokens) and tokens[i + 1].type == ">":
            out.append("<>")
            i += 1
        else:
            out.append(tok.type)
        if _space_after(tokens, i):
            out.append(" ")
        i += 1
    return "".join(out)


def parse_aliases(text: str, path: str, opts: Options) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line, name, value)`` of an aliases(5) text, warning about bad lines."""
    for lineno, line in logical_lines(text, path):
        tokens = tok822_scan(line)
        colon = next((i for i, t in enumerate(tokens) if t.type == ":"), -1)
        if colon <= 0 or colon == len(tokens) - 1 or any(t.type == "," for t in tokens[:colon]):
            log.warning("%s, line %d: need name:value pair", path, lineno)
            continue
        if any(t.type in "@%" for t in tokens[:colon]):
            log.warning("%s, line %d: name must be local", path, lineno)
            continue
        key = tok822_string(tokens[:colon], external=False)
        value = tok822_string(tokens[colon + 1:], external=True)
        yield lineno, fold_key(key) if opts.fold else key, value


def _signatures(cfg: Config) -> list[tuple[str, str]]:
    """Sendmail's "database complete" mark and NIS's time and master name (unfolded keys)."""
    return [
        ("@", "@"),
        ("YP_LAST_MODIFIED", f"{int(time.time()):010d}"),
        ("YP_MASTER_NAME", cfg.get("myhostname")),
    ]


POSTALIAS = Tool(
    prog="postalias",
    optstring="c:d:finNopq:rsuvw",
    usage="usage: postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key]"
          " [map_type:]file...",
    parse=parse_aliases,
    separator=":\t",
    extra_entries=_signatures,
)


def main(argv: list[str]) -> int:
    return run_tool(POSTALIAS, argv)
