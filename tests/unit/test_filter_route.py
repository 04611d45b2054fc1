"""A content filter overrides the address resolver (≈ qmgr_message_resolve()):
every recipient goes to the filter's transport:nexthop, unresolved; a filter
without a next hop goes to default_filter_nexthop, else the recipient's
domain, else $myhostname."""

from __future__ import annotations

import asyncio

import pytest

from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry, Recipient
from qmgr.resolve import RouteResolver
from qmgr.scheduler import _apply

MAIN_CF = """\
compatibility_level = 3.6
myhostname = mx.postbus.test
mydomain = postbus.test
mydestination = $myhostname, localhost, postbus.test
"""


@pytest.mark.parametrize(("settings", "filter", "address", "route"), [
    ("", "smtp:[127.0.0.1]:10024", "u@remote.test", ("smtp", "[127.0.0.1]:10024")),
    ("", "content-filter:", "u@Remote.Test", ("content-filter", "Remote.Test")),
    ("", "scan", "u@postbus.test", ("scan", "postbus.test")),
    ("", "scan:", "user", ("scan", "mx.postbus.test")),
    ("default_filter_nexthop = [10.0.0.1]:25\n", "scan:", "u@remote.test",
     ("scan", "[10.0.0.1]:25")),
    ("default_filter_nexthop = [10.0.0.1]:25\n", "scan:own", "u@remote.test",
     ("scan", "own")),
    # the double-bounce address is the resolver's business: a filter takes it too
    ("", "scan:x", "double-bounce@postbus.test", ("scan", "x")),
])
def test_filter_route(settings: str, filter: str, address: str,
                      route: tuple[str, str]) -> None:
    got = RouteResolver(Config.from_text(MAIN_CF + settings)).filtered(filter, address)
    assert (got.transport, got.nexthop, got.recipient) == (*route, address)


def test_every_open_recipient_of_a_filtered_message_goes_to_the_filter() -> None:
    resolver = RouteResolver(Config.from_text(MAIN_CF))
    entry = QueueEntry("Q1", "s@x.test", [Recipient("a@postbus.test"),
                                          Recipient("b%c@remote.test")],
                       filter="smtp:[127.0.0.1]:10024")
    for i, rcpt in enumerate(entry.recipients):
        assert not _apply(entry, i, resolver.filtered(entry.filter, rcpt.address))
    assert [(r.address, r.transport, r.state) for r in entry.recipients] == [
        ("a@postbus.test", "smtp:[127.0.0.1]:10024", "active"),
        ("b%c@remote.test", "smtp:[127.0.0.1]:10024", "active")]
    assert QueueEntry.decode(entry.encode()).filter == "smtp:[127.0.0.1]:10024"
    # without a filter, the resolver decides
    plain = asyncio.run(resolver.route("a@postbus.test"))
    assert (plain.transport, plain.nexthop) == ("local", "mx.postbus.test")


def test_an_entry_without_a_filter_is_written_as_before() -> None:
    """``filter`` is written only when set: the version before it reads the entry."""
    plain = QueueEntry("Q1", "s@x.test", [Recipient("a@postbus.test")])
    assert b'"filter"' not in plain.encode()
    assert QueueEntry.decode(plain.encode()).filter == ""
    plain.filter = "scan:"
    assert b'"filter":"scan:"' in plain.encode()
