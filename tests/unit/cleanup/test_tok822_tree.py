"""The header address parser against Postfix's own golden files (tok822_parse.in/.ref,
tok822_limit.in/.ref from Postfix 3.7.11's src/global), reproduced byte for byte:
the parse tree, the internal form and both external forms, warnings included."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from postbus import tok822_tree as t

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"
TOKEN_LIMIT = 20  # the test program's TEST_TOKEN_LIMIT


def logical_lines(text: str) -> list[str]:
    """readllines(): a line starting with blanks continues the previous one (joined as is)."""
    out: list[str] = []
    for line in text.split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[:1].isspace() and out:
            out[-1] += line
        else:
            out.append(line)
    return out


def show(tree: t.Tok | None, indent: int = 0) -> list[str]:
    names = {t.COMMENT: "comment", t.ATOM: "atom", t.QSTRING: "quoted string",
             t.DOMLIT: "domain literal"}
    out: list[str] = []
    for tp in tree or ():
        pad = " " * indent
        if tp.kind == t.ADDR:
            out.append(f"{pad} address")
            out += show(tp.head, indent + 2)
        elif tp.kind == t.STARTGRP:
            out.append(f'{pad} group ":"')
        elif tp.kind in names:
            out.append(f'{pad} {names[tp.kind]} "{tp.text}"')
        else:
            out.append(f'{pad} OP "{tp.kind}"')
    return out


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"unknown: warning: {record.getMessage()}")


def run(text: str) -> str:
    warnings = Warnings()
    logging.getLogger("postbus.cleanup").addHandler(warnings)
    out: list[str] = []
    try:
        for line in logical_lines(text):
            out.append(f">>>{line}<<<\n\n")
            tree = t.parse(line, TOKEN_LIMIT)
            out.append("Parse tree:\n" + "".join(s + "\n" for s in show(tree)) + "\n")
            out.append(f"Internalized:\n{t.internalize(tree)}\n\n")
            for title, flags in (("no newlines inserted", t.TRNC), ("newlines inserted", t.HEAD)):
                warnings.lines.clear()
                text_out = t.externalize(tree, flags)
                out += [w + "\n" for w in warnings.lines]
                out.append(f"Externalized, {title}:\n{text_out}\n\n")
    finally:
        logging.getLogger("postbus.cleanup").removeHandler(warnings)
    return "".join(out)


@pytest.mark.parametrize("name", ["tok822_parse", "tok822_limit"])
def test_golden(name: str) -> None:
    given = (GOLDEN / f"{name}.in").read_text()
    assert run(given) == (GOLDEN / f"{name}.ref").read_text()


def test_group_members_are_addresses() -> None:
    """Members of a named group are addresses too: cleanup rewrites them."""
    tree = t.parse('"Joe Q." <joe@example.com>, group: a@b, c;, d (comment)')
    assert [t.internalize(a.head) for a in t.addresses(tree)] == [
        "joe@example.com", "a@b", "c", "d"]
    assert t.externalize(tree, t.HEAD) == (
        '"Joe Q." <joe@example.com>,\ngroup: a@b,\nc;,\nd (comment)')
