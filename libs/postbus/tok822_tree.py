"""RFC 822 address lists as a parse tree (≈ tok822_parse.c, tok822_tree.c).

cleanup rewrites the addresses in From:, To: and the other address
headers: it parses the header value into a tree whose ``ADDR`` nodes hold
one address each (phrases, comments and ``<>`` stay around them), rewrites
each address, and writes the tree back out only when an address changed.
This is Postfix's parser, ported node for node (it works right to left
over a doubly linked list and inserts missing commas), so that a header
comes out as Postfix would write it, spaces and line breaks included.

The flat tokenizer of :mod:`postbus.tok822` serves the address resolver;
the token kinds are the same.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from postbus.tok822 import (
    ATOM,
    COMMENT,
    DOMLIT,
    NEEDS_QUOTE,
    OPERATORS,
    QSTRING,
    quote_822_local,
)

ADDR: Final = "addr"
STARTGRP: Final = "startgrp"

_BLANKS: Final = " \t\r\n"
log = logging.getLogger("postbus.cleanup")

#: externalize() flags (≈ TOK822_STR_*)
LINE: Final = 1  # a newline after each comma, for header folding
TRNC: Final = 2  # cut over-long non-address text (the Sendmail overflow guard)
HEAD: Final = LINE | TRNC

MAX_NONADDR_LENGTH: Final = 250


class Tok:
    """One token or, for ADDR, a group of tokens (≈ TOK822)."""

    __slots__ = ("head", "kind", "next", "owner", "prev", "tail", "text")

    def __init__(self, kind: str, text: str = "") -> None:
        self.kind = kind
        self.text = text
        self.prev: Tok | None = None
        self.next: Tok | None = None
        self.head: Tok | None = None
        self.tail: Tok | None = None
        self.owner: Tok | None = None

    def __iter__(self) -> _Chain:
        return _Chain(self)

    def __repr__(self) -> str:
        return f"<Tok {self.kind} {self.text!r}>"


class _Chain:
    def __init__(self, first: Tok | None) -> None:
        self.node = first

    def __iter__(self) -> _Chain:
        return self

    def __next__(self) -> Tok:
        node = self.node
        if node is None:
            raise StopIteration
        self.node = node.next
        return node


# -- list surgery (≈ tok822_tree.c) ------------------------------------------------------------


def append(t1: Tok, t2: Tok) -> Tok:
    """Insert the list ``t2`` after ``t1``; the end of the inserted list."""
    nxt = t1.next
    t1.next, t2.prev, t2.owner = t2, t1, t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = nxt
    if nxt is not None:
        nxt.prev = t2
    return t2


def prepend(t1: Tok, t2: Tok) -> Tok:
    """Insert the list ``t2`` before ``t1``; the end of the inserted list."""
    prev = t1.prev
    if prev is not None:
        prev.next = t2
    t2.prev, t2.owner = prev, t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next, t1.prev = t1, t2
    return t2


def cut_before(tp: Tok) -> Tok | None:
    prev = tp.prev
    if prev is not None:
        prev.next = None
        tp.prev = None
    return prev


def unlink(tp: Tok) -> Tok | None:
    prev, nxt = tp.prev, tp.next
    if prev is not None:
        prev.next = nxt
    if nxt is not None:
        nxt.prev = prev
    tp.prev = tp.next = None
    return prev


def sub_append(t1: Tok, t2: Tok) -> Tok:
    """Append the list ``t2`` to the members of ``t1``."""
    if t1.head is not None:
        assert t1.tail is not None
        t1.tail = append(t1.tail, t2)
        return t1.tail
    t1.head, t2.owner = t2, t1
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1
    t1.tail = t2
    return t2


def _group(left: Tok, right: Tok, add_comma: bool) -> Tok:
    """Gather the tokens between ``left`` and ``right`` under a new ADDR node;
    optionally put a comma after it (≈ tok822_group())."""
    first = left.next
    if left is not right and first is not None and first is not right:
        cut_before(right)
        cut_before(first)
        group = Tok(ADDR)
        sub_append(group, first)
        append(left, group)
        append(group, right)
        if add_comma:
            append(left, Tok(","))
    return left


# -- scanning and parsing (≈ tok822_parse.c) ---------------------------------------------------


_ATOM_RUN = re.compile(r'[^ \t\r\n|%!()<>@,;:\\".\[\]]+')


def _collect(text: str, i: int, stop: str | None) -> tuple[str, int]:
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
        elif (ch == stop) if stop is not None else (ch in _BLANKS or ch in OPERATORS):
            break
        out.append(" " if ch in _BLANKS else ch)
        i += 1
    return "".join(out), i


def _comment(text: str, i: int) -> tuple[str, int]:
    out = ["("]
    level, n = 1, len(text)
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
        elif ch == "\\":
            if i >= n:
                break
            out.append(text[i])
            i += 1
    return "".join(out), i


def scan(text: str, limit: int = 0) -> tuple[Tok | None, Tok | None]:
    """Tokenize into a linked list; (first, last) (≈ tok822_scan_limit())."""
    head: Tok | None = None
    tail: Tok | None = None
    count, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        i += 1
        if ch in _BLANKS:
            continue
        if ch == "(":
            value, i = _comment(text, i)
            tp = Tok(COMMENT, value)
        elif ch == "[":
            value, i = _collect(text, i, "]")
            tp = Tok(DOMLIT, value)
            i += i < n
        elif ch == '"':
            value, i = _collect(text, i, '"')
            tp = Tok(QSTRING, value)
            i += i < n
        elif ch != "\\" and ch in OPERATORS:
            tp = Tok(ch)
        else:
            value, i = _collect(text, i - 1, None)
            tp = Tok(QSTRING if NEEDS_QUOTE.search(value) else ATOM, value)
        if head is None or tail is None:
            head = tail = tp
        else:
            tail = append(tail, tp)
        count += 1
        if 0 < limit <= count:
            break
    return head, tail


def scan_addr(text: str) -> Tok:
    """One address as an ADDR node (≈ tok822_scan_addr())."""
    tree = Tok(ADDR)
    first, last = scan(text)
    tree.head, tree.tail = first, last
    for tp in _Chain(first):
        tp.owner = tree
    return tree


def replace_addr(addr: Tok, text: str) -> str:
    """Put the tokens of ``text`` in place of an ADDR node's members; their text."""
    fresh = scan_addr(text)
    addr.head, addr.tail = fresh.head, fresh.tail
    for tp in _Chain(addr.head):
        tp.owner = addr
    return externalize(addr.head)


def parse(text: str, limit: int = 0) -> Tok | None:
    """An address list as a tree: ADDR nodes between commas (≈ tok822_parse_limit())."""
    first, last = scan(text, limit)
    if first is None or last is None:
        return None
    head, tail = Tok(""), Tok("")
    head.next, first.prev = first, head
    last.next, tail.prev = tail, last
    do_word, do_group = True, False
    right = tail
    tp = tail.prev
    while tp.kind:
        if tp.kind == COMMENT:  # move the comment to the side
            prev = unlink(tp)
            assert prev is not None
            right = prepend(right, tp)
            tp = prev
            continue
        if tp.kind == ";":  # right side of a named group
            right = _group(tp, right, True)
            do_word = do_group = True
        elif tp.kind == ":" and do_group:
            tp.kind = STARTGRP
            _group(tp, right, False)
            while tp.kind and tp.kind != ",":
                assert tp.prev is not None
                tp = tp.prev
            right = tp
            continue
        elif tp.kind == ">":  # right side of a <route>
            right = _group(tp, right, True)
            while tp.kind and tp.kind != "<":
                if tp.kind == COMMENT:
                    prev = unlink(tp)
                    assert prev is not None
                    right = prepend(right, tp)
                    tp = prev
                    continue
                assert tp.prev is not None
                tp = tp.prev
            _group(tp, right, False)
            while tp.kind and (tp.kind not in (">", ";", ",", ":")):
                assert tp.prev is not None
                tp = tp.prev
            right = tp
            do_word = True
            continue
        elif tp.kind in (ATOM, QSTRING, DOMLIT):
            if not do_word:
                right = _group(tp, right, True).next  # type: ignore[assignment]
            do_word = False
        elif tp.kind == ",":
            right = _group(tp, right, False)
            do_word = True
        else:
            do_word = True
        assert tp.prev is not None
        tp = tp.prev
    _group(tp, right, False)
    result = head.next if head.next is not tail else None
    assert head.next is not None
    cut_before(head.next)
    cut_before(tail)
    return result


# -- back to text ------------------------------------------------------------------------------

_WORDS: Final = frozenset({ATOM, QSTRING, COMMENT, DOMLIT, ADDR})


def _space_after(tp: Tok) -> bool:
    """≈ tok822_append_space(): no space inside an address."""
    nxt = tp.next
    if nxt is None or tp.owner is not None:
        return False
    if tp.kind in (",", STARTGRP) or nxt.kind == "<":
        return True
    return tp.kind in _WORDS and nxt.kind in _WORDS


def internalize(tree: Tok | None, *, line: bool = False) -> str:
    """The unquoted text of a token list (≈ tok822_internalize())."""
    out: list[str] = []
    for tp in _Chain(tree):
        if tp.kind == ",":
            out.append(",\n" if line else ",")
            if line:
                continue
        elif tp.kind == ADDR:
            out.append(internalize(tp.head))
        elif tp.kind in (COMMENT, ATOM, QSTRING):
            out.append(tp.text)
        elif tp.kind == DOMLIT:
            out.append(f"[{tp.text}]")
        elif tp.kind == STARTGRP:
            out.append(":")
        else:
            out.append(tp.kind)
        if _space_after(tp):
            out.append(" ")
    return "".join(out)


def _quoted(text: str, specials: str) -> str:
    return "".join("\\" + ch if ch in specials else ch for ch in text)


def externalize(tree: Tok | None, flags: int = 0) -> str:
    """The quoted text of a token list (≈ tok822_externalize()).

    With LINE each comma is followed by a newline (cleanup folds there);
    with TRNC an address expression with more than 250 bytes of phrases
    and comments is cut down to ``<address>``, as Postfix (and Sendmail)
    do against old buffer overflows."""
    out: list[str] = []
    size = 0
    start, addr, addr_len = 0, None, 0

    def add(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text)

    def enforce() -> None:
        nonlocal size
        if addr is not None and size - addr_len > start + MAX_NONADDR_LENGTH:
            _strip_address(out, start, addr.head)
            size = sum(len(s) for s in out)

    for tp in _Chain(tree):
        if tp.kind == ",":
            if flags & TRNC:
                enforce()
            add(",\n" if flags & LINE else ", ")
            if flags & TRNC:
                start, addr, addr_len = size, None, 0
            continue
        if tp.kind == ADDR:
            addr = tp
            text = quote_822_local(internalize(tp.head))
            addr_len = len(text)
            add(text)
        elif tp.kind in (ATOM, COMMENT):
            add(tp.text)
        elif tp.kind == QSTRING:
            add('"' + _quoted(tp.text, '"\\\r\n') + '"')
        elif tp.kind == DOMLIT:
            add("[" + _quoted(tp.text, "\\\r\n") + "]")
        elif tp.kind == STARTGRP:
            add(":")
        elif tp.kind == "<":
            if tp.next is not None and tp.next.kind == ">":
                addr, addr_len = tp, 0
            add("<")
        else:
            add(tp.kind)
        if _space_after(tp):
            add(" ")
    if flags & TRNC:
        enforce()
    return "".join(out)


def _strip_address(out: list[str], start: int, head: Tok | None) -> None:
    """Replace everything since ``start`` by ``<address>`` (≈ strip_address())."""
    text = "".join(out)
    log.warning(
        "stripping too many comments from address: %.100s...", text[start:])
    kept = text[:start] + "<" + (quote_822_local(internalize(head)) if head else "") + ">"
    out[:] = [kept]


def addresses(tree: Tok | None) -> list[Tok]:
    """The ADDR nodes at the top level of a tree (≈ tok822_grep(tree, TOK822_ADDR))."""
    return [tp for tp in _Chain(tree) if tp.kind == ADDR]
