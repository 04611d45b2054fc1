"""The examples and table search orders of canonical(5), virtual(5), relocated(5) and
transport(5), table-driven: each row is a table, an address, and what the manual
says Postfix makes of it (the same tables go to a real Postfix in
tests/integration/test_rewrite_vs_postfix.py)."""

from __future__ import annotations

import pytest

from postbus.cleanup import Cleanup
from postbus.cleanup.canonical import Classes
from postbus.config.loader import Config
from postbus.resolve import Resolver

MAIN = """\
compatibility_level = 3.6
myhostname = mx.my.domain
mydomain = my.domain
myorigin = my.domain
mydestination = $myhostname, localhost, my.domain
recipient_delimiter = +
"""


def config(**settings: str) -> Config:
    return Config.from_text(MAIN + "".join(f"{k} = {v}\n" for k, v in settings.items()), "")


# canonical(5) TABLE SEARCH ORDER and RESULT ADDRESS REWRITING; each table lists the
# key forms from highest precedence down, so the first present one must win
ORDER = ["{user+foo@my.domain=full@result.example}", "{user@my.domain=bare@result.example}",
         "{user+foo=localext@result.example}", "{user=local@result.example}",
         "{@my.domain=domain@result.example}"]


def from_rank(rank: int) -> str:
    """The search-order table without its ``rank`` highest-precedence entries."""
    return "{" + ", ".join(ORDER[rank:]) + "}"



@pytest.mark.parametrize(("table", "address", "result"), [
    ("{{wietse=Wietse.Venema}}", "wietse@my.domain", "Wietse.Venema@my.domain"),
    ("{{wietse=Wietse.Venema}}", "wietse@mx.my.domain", "Wietse.Venema@my.domain"),
    ("{{wietse=Wietse.Venema}}", "wietse@other.example", "wietse@other.example"),
    ("{{@legacy.example=@my.domain}}", "joe@legacy.example", "joe@my.domain"),
    ("{{joe@legacy.example=joe.smith}}", "joe@legacy.example", "joe.smith@my.domain"),
    (from_rank(0), "user+foo@my.domain", "full@result.example"),
    (from_rank(1), "user+foo@my.domain", "bare+foo@result.example"),
    (from_rank(2), "user+foo@my.domain", "localext@result.example"),
    (from_rank(3), "user+foo@my.domain", "local+foo@result.example"),
    (from_rank(4), "user+foo@my.domain", "domain@result.example"),
])
async def test_canonical(table: str, address: str, result: str) -> None:
    state = Cleanup(config(canonical_maps=f"inline:{table}")).begin()
    assert await state.sender(address) == result
    await state.recipient(address)
    assert [r.address for r in state.recipients] == [result]
    state.finish()


async def test_canonical_classes_and_propagation() -> None:
    cfg = config(canonical_maps="inline:{{joe=Joe.User}}", canonical_classes="envelope_sender",
                 propagate_unmatched_extensions="")
    state = Cleanup(cfg).begin()
    assert await state.sender("joe+x@my.domain") == "Joe.User@my.domain"
    await state.recipient("joe@my.domain")
    assert state.recipients[0].address == "joe@my.domain"
    assert Cleanup(cfg).canonical.sender[0][1] == Classes.ENV_FROM


VIRTUAL = ("{virtual-alias.domain=anything}, {postmaster@virtual-alias.domain=postmaster}, "
           "{user1@virtual-alias.domain=address1}, "
           "{user2@virtual-alias.domain=address2, address3}")


@pytest.mark.parametrize(("address", "result"), [
    ("postmaster@virtual-alias.domain", ["postmaster@my.domain"]),
    ("user1@virtual-alias.domain", ["address1@my.domain"]),
    ("user2@virtual-alias.domain", ["address2@my.domain", "address3@my.domain"]),
    ("user2+ext@virtual-alias.domain", ["address2+ext@my.domain", "address3+ext@my.domain"]),
])
async def test_virtual_alias_domain(address: str, result: list[str]) -> None:
    """virtual(5) VIRTUAL ALIAS DOMAINS: the domain's own users, aliased."""
    state = Cleanup(config(virtual_alias_maps=f"inline:{{{VIRTUAL}}}")).begin()
    await state.recipient(address)
    state.finish()
    assert [r.address for r in state.recipients] == result
    assert {r.orig_rcpt for r in state.recipients} == {address}


async def test_virtual_alias_domain_rejects_unknown_users() -> None:
    """virtual_alias_domains defaults to $virtual_alias_maps: the "anything" entry makes
    the domain a virtual alias domain, whose unknown users smtpd rejects."""
    resolver = Resolver(config(virtual_alias_maps=f"inline:{{{VIRTUAL}}}"))
    reply = await resolver.resolve("nobody@virtual-alias.domain")
    assert (reply.transport, reply.nexthop) == (
        "error", "5.1.1 User unknown in virtual alias table")


@pytest.mark.parametrize(("table", "address", "moved"), [
    ("{{user@domain.example=contact via phone}}", "user@domain.example", "contact via phone"),
    ("{{user@domain.example=new@example.net}}", "user+foo@domain.example", "new@example.net"),
    ("{{user=new@example.net}}", "user@my.domain", "new@example.net"),
    ("{{user=new@example.net}}", "user@domain.example", None),
    ("{{@domain.example=new.example}}", "anyone@domain.example", "new.example"),
    ("{{user@domain.example=a}, {@domain.example=b}}", "user@domain.example", "a"),
])
async def test_relocated(table: str, address: str, moved: str | None) -> None:
    """relocated(5) TABLE SEARCH ORDER: user@domain, user (local domains), @domain."""
    reply = await Resolver(config(relocated_maps=f"inline:{table}")).resolve(address)
    if moved is None:
        assert reply.transport != "error"
    else:
        assert (reply.transport, reply.nexthop) == ("error", f"5.1.6 User has moved to {moved}")


@pytest.mark.parametrize(("table", "address", "route"), [
    # internal mail direct, everything else through a relay
    ("{my.domain=:}, {.my.domain=:}, {*=smtp:outbound-relay.my.domain}", "u@my.domain",
     ("local", "mx.my.domain")),
    ("{my.domain=:}, {.my.domain=:}, {*=smtp:outbound-relay.my.domain}", "u@sub.my.domain",
     ("smtp", "sub.my.domain")),
    ("{my.domain=:}, {.my.domain=:}, {*=smtp:outbound-relay.my.domain}", "u@example.net",
     ("smtp", "outbound-relay.my.domain")),
    # example.com and its subdomains through uucp
    ("{example.com=uucp:example}, {.example.com=uucp:example}", "u@example.com",
     ("uucp", "example")),
    ("{example.com=uucp:example}, {.example.com=uucp:example}", "u@a.example.com",
     ("uucp", "example")),
    ("{example.com=uucp:example}", "u@a.example.com", ("smtp", "a.example.com")),
    # a transport without a next hop: the recipient domain
    ("{example.com=slow:}", "u@example.com", ("slow", "example.com")),
    # a next hop without a transport: the class's transport
    ("{example.com=:[gateway.example.com]}", "u@example.com", ("smtp", "[gateway.example.com]")),
    ("{example.com=smtp:bar.example:2025}", "u@example.com", ("smtp", "bar.example:2025")),
    ("{example.com=smtp:bar.example, foo.example}", "u@example.com",
     ("smtp", "bar.example, foo.example")),
    ("{.example.com=error:mail for *.example.com is not deliverable}", "u@x.example.com",
     ("error", "mail for *.example.com is not deliverable")),
    # user+extension@domain, user@domain, domain
    ("{u+ext@example.com=a:}, {u@example.com=b:}, {example.com=c:}", "u+ext@example.com",
     ("a", "example.com")),
    ("{u@example.com=b:}, {example.com=c:}", "u+ext@example.com", ("b", "example.com")),
    ("{example.com=c:}", "u+ext@example.com", ("c", "example.com")),
])
async def test_transport(table: str, address: str, route: tuple[str, str]) -> None:
    """transport(5) EXAMPLES and TABLE SEARCH ORDER."""
    reply = await Resolver(config(transport_maps=f"inline:{{{table}}}")).resolve(address)
    assert (reply.transport, reply.nexthop) == route
