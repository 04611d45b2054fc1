"""aliases(5) parsing as postalias does it (RFC 822 tokens), without Redis."""

from __future__ import annotations

import logging

import pytest

from postbus.cli.postalias import parse_aliases
from postbus.cli.postmap import Options

CASES = [
    ("postmaster: root", ("postmaster", "root")),
    ("Root:  Joe,  \"|/bin/prog arg\" ,\n  /var/mail/file",
     ("root", 'Joe, "|/bin/prog arg", /var/mail/file')),
    ("list: :include:/etc/postbus/list", ("list", ":include:/etc/postbus/list")),
    ('"quoted name": x', ("quoted name", "x")),
    ("a b: c\n lead: x", ("a b", "c lead:x")),
    ("joe: joe.smith @ example . com", ("joe", "joe.smith@example.com")),
    ("x: a (comment) b", ("x", "a (comment) b")),
    ("x: foo\\,bar", ("x", '"foo,bar"')),
    ("x: <>", ("x", "<>")),
    ("x: [1.2.3.4]", ("x", "[1.2.3.4]")),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_alias_lines(text: str, expected: tuple[str, str]) -> None:
    assert [(k, v) for _, k, v in parse_aliases(text + "\n", "aliases", Options())] == [expected]


@pytest.mark.parametrize(("text", "warning"), [
    ("nocolon value", "need name:value pair"),
    ("empty:", "need name:value pair"),
    ("a, b: c", "need name:value pair"),
    ("user@example.com: x", "name must be local"),
    ("user%host: x", "name must be local"),
])
def test_bad_alias_lines(caplog: pytest.LogCaptureFixture, text: str, warning: str) -> None:
    with caplog.at_level(logging.WARNING):
        assert list(parse_aliases(text + "\n", "/etc/aliases", Options())) == []
    assert caplog.messages == [f"/etc/aliases, line 1: {warning}"]


def test_no_folding_with_f() -> None:
    opts = Options(fold=False)
    assert [(k, v) for _, k, v in parse_aliases("Root: Joe\n", "a", opts)] == [("Root", "Joe")]
