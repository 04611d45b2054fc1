"""Never a triple bounce: the qmgr discards mail to the local double-bounce
address (≈ qmgr_message_resolve()), so an undeliverable postmaster notice
that comes back ends here."""

from __future__ import annotations

import asyncio

import pytest

from postbus.config.loader import Config
from qmgr.resolve import RouteResolver

MAIN_CF = """\
compatibility_level = 3.6
myhostname = mx.postbus.test
mydomain = postbus.test
mydestination = $myhostname, localhost, postbus.test
"""


@pytest.mark.parametrize(("settings", "address", "route"), [
    ("", "double-bounce@mx.postbus.test",
     ("discard", "undeliverable postmaster notification discarded", "2.0.0")),
    ("", "Double-Bounce@PostBus.Test",
     ("discard", "undeliverable postmaster notification discarded", "2.0.0")),
    ("", "double-bounce",
     ("discard", "undeliverable postmaster notification discarded", "2.0.0")),
    ("", "double-bounce@remote.test", ("smtp", "remote.test", "")),
    ("", "double-bounce-x@postbus.test", ("local", "mx.postbus.test", "")),
    ("double_bounce_sender = nobounce\n", "double-bounce@postbus.test",
     ("local", "mx.postbus.test", "")),
    ("double_bounce_sender = nobounce\n", "nobounce@postbus.test",
     ("discard", "undeliverable postmaster notification discarded", "2.0.0")),
])
def test_mail_to_the_double_bounce_address_is_discarded(
    settings: str, address: str, route: tuple[str, str, str]
) -> None:
    resolver = RouteResolver(Config.from_text(MAIN_CF + settings))
    got = asyncio.run(resolver.route(address))
    assert (got.transport, got.nexthop, got.dsn) == route
