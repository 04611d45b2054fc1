"""Address headers of one plain address take a short way past the parser
(postbus.cleanup.headers._PLAIN): its answer must be the parser's, for headers
the context leaves alone (None) and for those it rewrites."""

from __future__ import annotations

import asyncio
import re

import pytest

from postbus.cleanup import Cleanup
from postbus.cleanup import headers as h
from postbus.cleanup.status import Status
from postbus.config.loader import Config

CFG = Config.from_text(
    "compatibility_level = 3.6\nmyorigin = example.com\nmydomain = example.com\n"
    "append_dot_mydomain = yes\nremote_header_rewrite_domain = remote.invalid\n", "")

HEADERS = [
    "From: <load@bench.test>",
    "To: sink@remote.test",
    "To:   <a.b+c@x-y.example.com>  ",
    "From: <user@host>",  # plain, but append_dot_mydomain rewrites it
    "From: user@host",
    "From: <user>",  # unqualified: not plain
    "From: <o'brien@x.y>",
    "From: <a!b@x.y>",
    "From: <a%b@x.y>",
    "Cc: <a@b.c.>",  # the trailing dot goes
    "Cc: <a@b..c>",
    "Reply-To: Some One <one@example.org>",  # a phrase: not plain
    "Sender: <\"a b\"@example.org>",  # a quoted local part: not plain
    "To: <a@b.c>, <d@e.f>",
    "To: <a@b.c>\n\t",
    "To: <@route:a@b.c>",
    "To: <a@[192.0.2.1]>",
    "From: <A@B.COM>",
    "From: <_@_.x>",
]


def _rewrite(context: str, header: str) -> str | None:
    cleanup = Cleanup(CFG)
    rewriter = cleanup.headers[context]
    opts = h.header_opts(header)
    assert opts is not None
    return asyncio.run(rewriter.rewrite(Status(), header, opts))


@pytest.mark.parametrize("context", ["local", "remote"])
@pytest.mark.parametrize("header", HEADERS)
def test_plain_address_as_the_parser_answers(
        context: str, header: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _rewrite(context, header)
    monkeypatch.setattr(h, "_PLAIN", re.compile(r"(?!)"))  # the parser every time
    assert fast == _rewrite(context, header)


def test_plain_address_needs_no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*args: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr(h.t, "parse", parse)
    assert _rewrite("local", "From: <load@bench.test>") is None
    assert _rewrite("remote", "To: sink@remote.test") is None
    with pytest.raises(AssertionError, match="parsed"):  # rewritten: the parser's work
        _rewrite("local", "From: <user@host>")


def test_plain_address_the_context_rewrites() -> None:
    assert _rewrite("local", "From: <user@host>") == "From: <user@host.example.com>"
