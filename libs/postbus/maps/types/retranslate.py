"""Compile regexp: (POSIX) and pcre: patterns with Python's ``re``.

Postfix compiles ``regexp:`` patterns with the C library's POSIX regcomp()
and ``pcre:`` patterns with PCRE2.  We translate both dialects to Python
``re`` syntax.  Known differences, all rare in mail tables:

* POSIX matching is leftmost-*longest*; Python's is leftmost-first.  The
  match/no-match answer is the same for anchored patterns, but with an
  alternation such as ``(a|ab)`` the text captured for ``$1`` can differ.
* POSIX collating elements (``[[.x.]]``, ``[[=x=]]``) are accepted only for
  single characters; character classes are the C locale's (ASCII).
* PCRE-only syntax without a Python counterpart (recursion, ``\\p{..}``,
  callouts, ``\\K``, backtracking verbs) fails to compile: the rule is
  logged and skipped, as Postfix does with a pattern PCRE rejects.
* PCRE features we translate: POSIX classes inside brackets, ``\\z``,
  ``\\Z``, ``\\h``, ``\\H``, ``\\R``, ``\\e``, ``\\Q...\\E``, ``(?<name>``,
  ``\\k<name>``, and the flags A (anchored), E (dollar end-only) and U
  (ungreedy).
"""

from __future__ import annotations

import re
import string
import warnings

__all__ = ["compile_pcre", "compile_posix"]

_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v",
    "blank": " \\t",
    "punct": "".join(re.escape(c) for c in string.punctuation),
    "print": "\\x20-\\x7e",
    "graph": "\\x21-\\x7e",
    "cntrl": "\\x00-\\x1f\\x7f",
    "xdigit": "0-9A-Fa-f",
    "word": "\\w",
}


def _compile(text: str, flags: int) -> re.Pattern[str]:
    # Python warns about syntax that may change meaning (nested sets); the
    # translation escapes those, and a warning must not abort table loading.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return re.compile(text, flags)


def _posix_class(pat: str, j: int) -> tuple[str | None, str | None, int]:
    """At ``[:``/``[=``/``[.``: return (class fragment, single char, next index)."""
    kind = pat[j + 1]
    end = pat.find(kind + "]", j + 2)
    if end < 0:
        raise re.error("brackets ([ ]) not balanced")
    name = pat[j + 2 : end]
    if kind == ":":
        if name not in _CLASSES:
            raise re.error("invalid character class")
        return _CLASSES[name], None, end + 2
    if len(name) != 1:
        raise re.error("invalid collation character")
    return None, name, end + 2


def _bracket(pat: str, i: int, posix: bool, newline_excl: bool) -> tuple[str, int]:
    """Translate a bracket expression starting at ``pat[i] == "["``."""
    j = i + 1
    negate = j < len(pat) and pat[j] == "^"
    j += negate
    items: list[str] = []
    first = True
    while True:
        if j >= len(pat):
            raise re.error("brackets ([ ]) not balanced")
        c = pat[j]
        if c == "]" and not first:
            j += 1
            break
        first = False
        frag: str | None
        if c == "[" and j + 1 < len(pat) and pat[j + 1] in ":=.":
            frag, lo, j = _posix_class(pat, j)
            if frag is not None:
                items.append(frag)
                continue
            assert lo is not None
        elif c == "\\" and not posix and j + 1 < len(pat):
            # PCRE escapes inside a class mean the same in Python (mostly).
            nxt = pat[j + 1]
            items.append({"h": " \\t", "e": "\\x1b"}.get(nxt, "\\" + nxt))
            j += 2
            continue
        else:
            lo, j = c, j + 1
        if j + 1 < len(pat) and pat[j] == "-" and pat[j + 1] != "]":
            hi = pat[j + 1]
            j += 2
            if hi == "\\" and not posix and j < len(pat):
                items.append(re.escape(lo) + "-\\" + pat[j])
                j += 1
            else:
                items.append(re.escape(lo) + "-" + re.escape(hi))
        else:
            items.append(re.escape(lo))
    if negate and newline_excl:
        items.append("\\n")
    return "[" + ("^" if negate else "") + "".join(items) + "]", j


_POSIX_ESCAPES = {
    "<": r"\b(?=\w)",
    ">": r"\b(?<=\w)",
    "`": r"\A",
    "'": r"\Z",
}


def compile_posix(pat: str, icase: bool, newline: bool, extended: bool) -> re.Pattern[str]:
    """Compile a POSIX (glibc) regular expression; raise ``re.error`` when invalid.

    ``newline`` is REG_NEWLINE (the ``m`` flag): without it ``.`` matches a
    newline and ``$`` matches only at the very end; ``extended`` is
    REG_EXTENDED (on unless the ``x`` flag toggles it off).
    """
    out: list[str] = []
    atom = -1  # where in ``out`` the last atom starts (-1: none yet)
    quantified = False  # the last thing written was a quantifier
    groups: list[int] = []  # ``out`` index of each open group
    i, n = 0, len(pat)
    while i < n:
        c = pat[i]
        at_start = i == 0 or (not extended and pat[max(0, i - 2) : i] in ("\\(", "\\|"))
        start = len(out)
        if c == "[":
            frag, i = _bracket(pat, i, True, newline)
            out.append(frag)
            atom, quantified = start, False
            continue
        if c == "\\":
            if i + 1 >= n:
                raise re.error("trailing backslash")
            d = pat[i + 1]
            i += 2
            if not extended and d in "(){}|+?":
                out.append(d)
            elif d in "wWsSbB" or (d.isdigit() and d != "0"):
                out.append("\\" + d)
            else:
                out.append(_POSIX_ESCAPES.get(d, re.escape(d)))
            atom, quantified = start, False
            continue
        i += 1
        quant = ""
        if c == "$" and (extended or i == n or pat[i : i + 2] in ("\\)", "\\|")):
            out.append("$" if newline else r"\Z")
        elif c == "^" and (extended or at_start):
            out.append("^")
        elif c == "*" and not (not extended and (at_start or pat[i - 2 : i - 1] == "^")):
            quant = "*"
        elif extended and c in "+?":
            quant = c
        elif extended and c == "{":
            if atom < 0:
                raise re.error("invalid preceding regular expression")
            close = pat.find("}", i)
            if close < 0:
                raise re.error("unmatched brace")
            m = re.fullmatch(r"(\d*)(,(\d*))?", pat[i:close])
            low = m.group(1) if m else ""
            if m is None or (not low and not m.group(2)) or (
                    m.group(3) and int(m.group(3)) < int(low or 0)):
                raise re.error("invalid brace content")
            quant = "{" + (low or "0") + (m.group(2) or "") + "}"  # {,n} is {0,n}
            i = close + 1
        elif extended and c == "(":
            if pat[i : i + 1] in ("?", "*", "+"):
                raise re.error("invalid preceding regular expression")
            groups.append(start)
            out.append("(")
            quantified = False
            continue
        elif extended and c == ")":
            if not groups:  # glibc takes an unmatched ")" literally
                out.append("\\)")
                atom, quantified = start, False
                continue
            out.append(")")
            atom, quantified = groups.pop(), False
            continue
        elif extended and c == "|":
            out.append("|")
            atom, quantified = -1, False
            continue
        elif c == ".":
            out.append(".")
        else:
            out.append(re.escape(c))
        if quant:
            if atom < 0:
                raise re.error("invalid preceding regular expression")
            if quantified:  # a** is (a*)*: Python would refuse or read a possessive
                out[atom:] = ["(?:" + "".join(out[atom:]) + ")"]
            out.append(quant)
            quantified = True
        elif out[start:] and out[start] not in ("^", "$", r"\Z"):
            atom, quantified = start, False
    flags = (re.IGNORECASE if icase else 0) | (re.MULTILINE if newline else re.DOTALL)
    return _compile("".join(out), flags)


def _quantifier_len(pat: str, i: int) -> int:
    """Length of a ``{n}``, ``{n,}`` or ``{n,m}`` quantifier at pat[i], else 0."""
    m = re.match(r"\{\d+(,\d*)?\}", pat[i:])
    return m.end() if m else 0


def compile_pcre(pat: str, flags: str) -> tuple[re.Pattern[str], bool]:
    """Compile a PCRE pattern with Postfix's flag letters already toggled.

    ``flags`` holds the letters that are *on* (``i`` and ``s`` by default).
    Returns the pattern and whether it is anchored (flag ``A``: match at the
    start only).  Raises ``re.error`` when Python cannot compile it.
    """
    ungreedy = "U" in flags
    dollar_endonly = "E" in flags and "m" not in flags
    out: list[str] = []
    i, n = 0, len(pat)
    prev_atom = False
    while i < n:
        c = pat[i]
        quant = 0
        if c == "\\" and i + 1 < n:
            d = pat[i + 1]
            i += 2
            if d == "Q":
                end = pat.find("\\E", i)
                end = n if end < 0 else end
                out.append(re.escape(pat[i:end]))
                i = end + 2
            elif d == "k" and i < n and pat[i] in "<{'":
                close = {"<": ">", "{": "}", "'": "'"}[pat[i]]
                end = pat.find(close, i + 1)
                if end < 0:
                    raise re.error("bad \\k reference")
                out.append(f"(?P={pat[i + 1:end]})")
                i = end + 1
            else:
                out.append({"z": r"\Z", "Z": r"(?=\n?\Z)", "h": "[ \\t]", "H": "[^ \\t]",
                            "e": r"\x1b", "R": r"(?:\r\n|[\n\v\f\r\x85])"}.get(d, "\\" + d))
            prev_atom = True
            continue
        if c == "[":
            frag, i = _bracket(pat, i, False, False)
            out.append(frag)
            prev_atom = True
            continue
        if c == "(" and pat.startswith("(?<", i) and pat[i + 3 : i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            prev_atom = False
            continue
        if c == "(" and pat.startswith("(?'", i):
            end = pat.find("'", i + 3)
            out.append(f"(?P<{pat[i + 3:end]}>")
            i = end + 1
            prev_atom = False
            continue
        if c in "*+?" and prev_atom:
            quant = 1
        elif c == "{" and prev_atom:
            quant = _quantifier_len(pat, i)
        if quant:
            out.append(pat[i : i + quant])
            i += quant
            if i < n and pat[i] == "+":
                out.append("+")
                i += 1
            elif ungreedy:
                if i < n and pat[i] == "?":
                    i += 1
                else:
                    out.append("?")
            elif i < n and pat[i] == "?":
                out.append("?")
                i += 1
            prev_atom = False
            continue
        if c == "$" and dollar_endonly:
            out.append(r"\Z")
        else:
            out.append(c)
        prev_atom = c not in "(|"
        i += 1
    re_flags = (
        (re.IGNORECASE if "i" in flags else 0)
        | (re.MULTILINE if "m" in flags else 0)
        | (re.DOTALL if "s" in flags else 0)
        | (re.VERBOSE if "x" in flags else 0)
    )
    return _compile("".join(out), re_flags), "A" in flags
