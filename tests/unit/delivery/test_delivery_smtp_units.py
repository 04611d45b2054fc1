"""delivery-smtp pieces that need no network: next hops, the DATA encoding, addresses."""

from __future__ import annotations

import pytest

from delivery_smtp.connect import NextHop, parse_nexthops
from delivery_smtp.proto import quote_addr, xtext
from delivery_smtp.session import data_bytes


@pytest.mark.parametrize(
    ("nexthop", "lmtp", "hops"),
    [
        ("[mail.example.com]:587", False, [NextHop("mail.example.com", 587, False)]),
        ("[192.0.2.1]", False, [NextHop("192.0.2.1", 25, False)]),
        ("example.com", False, [NextHop("example.com", 25, True)]),
        ("example.com:2525", False, [NextHop("example.com", 2525, True)]),
        ("192.0.2.1", False, [NextHop("192.0.2.1", 25, False)]),
        ("[ipv6:2001:db8::1]:26", False, [NextHop("ipv6:2001:db8::1", 26, False)]),
        ("[a.test]:smtp, b.test", False,
         [NextHop("a.test", 25, False), NextHop("b.test", 25, True)]),
        ("inet:lmtp.test:24", True, [NextHop("lmtp.test", 24, False)]),
        ("lmtp.test", True, [NextHop("lmtp.test", 24, False)]),
        ("unix:/run/dovecot/lmtp", True, [NextHop("/run/dovecot/lmtp", 0, False,
                                                  path="/run/dovecot/lmtp")]),
    ],
)
def test_parse_nexthops(nexthop: str, lmtp: bool, hops: list[NextHop]) -> None:
    assert parse_nexthops(nexthop, 24 if lmtp else 25, lmtp) == hops


@pytest.mark.parametrize("bad", ["[unclosed", "[]:25", "[h]x", ""])
def test_parse_nexthops_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_nexthops(bad, 25)


def test_data_bytes_stuffs_dots_and_normalises_line_ends() -> None:
    assert data_bytes(b"a\n.b\r\n..c\rd") == b"a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    assert data_bytes(b"") == b".\r\n"


def test_quote_addr_and_xtext() -> None:
    assert quote_addr("bob@example.com") == "bob@example.com"
    assert quote_addr("john doe@example.com") == '"john doe"@example.com'
    assert quote_addr("postmaster") == "postmaster"
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
