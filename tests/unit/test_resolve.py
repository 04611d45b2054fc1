"""The address resolver, table-driven (≈ trivial-rewrite's resolve_clnt_test).

Each case is an internal-form address and what Postfix's resolver makes of
it with the configuration below: the resolved address, the address class,
whether routing operators remain (``routed``), and the transport and next
hop. smtpd's relay decisions built on these are compared with a real
Postfix in tests/integration/test_relay_probes.py.
"""

from __future__ import annotations

import pytest

from postbus.config.loader import Config
from postbus.maps.addr_find import Found
from postbus.maps.maps import open_maps
from postbus.resolve import AddressClass, Resolver
from postbus.rewrite import RewriteRules
from postbus.tok822 import internalize, quote_822_local, scan

MAIN_CF = """\
compatibility_level = 3.6
myhostname = mx.postbus.test
mydomain = postbus.test
mydestination = $myhostname, localhost, postbus.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relay_domains = relay.example
virtual_alias_domains = alias.example
virtual_mailbox_domains = mbox.example
transport_maps = inline:{{special.example=smtp:[10.0.0.1]:2525},
    {slow@postbus.test=retry:4.3.2 wait}}
"""

LOCAL, ALIAS, MBOX = AddressClass.LOCAL, AddressClass.VIRTUAL_ALIAS, AddressClass.VIRTUAL_MAILBOX
RELAY, DEFAULT = AddressClass.RELAY, AddressClass.DEFAULT

# address -> (resolved recipient, class, routed, transport, nexthop)
CASES = [
    ("user@postbus.test", "user@postbus.test", LOCAL, False, "local", "mx.postbus.test"),
    ("User@PostBus.Test", "User@PostBus.Test", LOCAL, False, "local", "mx.postbus.test"),
    ("user", "user@mx.postbus.test", LOCAL, False, "local", "mx.postbus.test"),
    ("postmaster", "postmaster@mx.postbus.test", LOCAL, False, "local", "mx.postbus.test"),
    ("@postbus.test", "MAILER-DAEMON@postbus.test", LOCAL, False, "local", "mx.postbus.test"),
    ("user@[127.0.0.1]", "user@[127.0.0.1]", LOCAL, False, "local", "mx.postbus.test"),
    ("user@[127.0.0.2]", "user@[127.0.0.2]", DEFAULT, False, "smtp", "[127.0.0.2]"),
    ("user%example.com@postbus.test", "user@example.com", DEFAULT, False, "smtp",
     "example.com"),
    ("example.com!user@postbus.test", "user@example.com", DEFAULT, False, "smtp",
     "example.com"),
    ("user@example.com@postbus.test", "user@example.com", DEFAULT, False, "smtp",
     "example.com"),
    ("user%a%postbus.test@postbus.test", "user@a", DEFAULT, False, "smtp", "a"),
    ("a!b!user@postbus.test", "b!user@a", DEFAULT, True, "smtp", "a"),
    ("user%postbus.test@postbus.test", "user@postbus.test", LOCAL, False, "local",
     "mx.postbus.test"),
    ("postbus.test!user@postbus.test", "user@postbus.test", LOCAL, False, "local",
     "mx.postbus.test"),
    ("user%example.com", "user@example.com", DEFAULT, False, "smtp", "example.com"),
    ("user%example.com@[127.0.0.1]", "user@example.com", DEFAULT, False, "smtp",
     "example.com"),
    ("user%x@example.com", "user%x@example.com", DEFAULT, True, "smtp", "example.com"),
    ("user@x@example.com", "user@x@example.com", DEFAULT, True, "smtp", "example.com"),
    ("user@postbus.test.", "user@postbus.test", LOCAL, False, "local", "mx.postbus.test"),
    ("user@example.com.", "user@example.com", DEFAULT, False, "smtp", "example.com"),
    ("user@relay.example", "user@relay.example", RELAY, False, "relay", "relay.example"),
    ("user@alias.example", "user@alias.example", ALIAS, False, "error",
     "5.1.1 User unknown in virtual alias table"),
    ("user@mbox.example", "user@mbox.example", MBOX, False, "virtual", "mbox.example"),
    ("user@special.example", "user@special.example", DEFAULT, False, "smtp",
     "[10.0.0.1]:2525"),
    ("slow@postbus.test", "slow@postbus.test", LOCAL, False, "retry", "4.3.2 wait"),
]


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(Config.from_text(MAIN_CF, ""))


@pytest.mark.parametrize(("address", "recipient", "cls", "routed", "transport", "nexthop"), CASES)
async def test_resolve(
    resolver: Resolver, address: str, recipient: str, cls: AddressClass, routed: bool,
    transport: str, nexthop: str,
) -> None:
    reply = await resolver.resolve(address)
    assert (reply.recipient, reply.address_class, reply.routed, reply.error) == (
        recipient, cls, routed, False)
    assert (reply.transport, reply.nexthop) == (transport, nexthop)


@pytest.mark.parametrize("address", [
    "user@", "user@a..b", "user%bad..example@postbus.test", "user%1.2.3.4@postbus.test",
    "@@postbus.test", "user@[1.2.3]", "user@-a.example", "\udcff@postbus.test",
])
async def test_malformed_results(resolver: Resolver, address: str) -> None:
    assert (await resolver.resolve(address)).error


async def test_relayhost_sends_relay_and_default_mail_there() -> None:
    resolver = Resolver(Config.from_text(MAIN_CF + "relayhost = [smart.example]:587\n", ""))
    assert (await resolver.resolve("a@example.com")).nexthop == "[smart.example]:587"
    assert (await resolver.resolve("a@relay.example")).nexthop == "[smart.example]:587"
    assert (await resolver.resolve("a@postbus.test")).nexthop == "mx.postbus.test"


async def test_without_percent_hack_and_bang_paths_they_stay_local() -> None:
    cfg = Config.from_text(MAIN_CF + "allow_percent_hack = no\nswap_bangpath = no\n", "")
    resolver = Resolver(cfg)
    reply = await resolver.resolve("user%example.com@postbus.test")
    assert (reply.recipient, reply.address_class) == ("user%example.com@postbus.test", LOCAL)
    reply = await resolver.resolve("example.com!user@postbus.test")
    assert (reply.recipient, reply.address_class) == ("example.com!user@postbus.test", LOCAL)
    # an @ inside the local part is always a routing operator
    assert (await resolver.resolve("user@example.com@postbus.test")).address_class is DEFAULT


async def test_numeric_domains_when_allowed() -> None:
    resolver = Resolver(Config.from_text(MAIN_CF + "resolve_numeric_domain = yes\n", ""))
    reply = await resolver.resolve("user@127.0.0.1")
    assert (reply.recipient, reply.address_class, reply.error) == (
        "user@[127.0.0.1]", LOCAL, False)


@pytest.mark.parametrize(("address", "quoted"), [
    ("user@example.com", "user@example.com"),
    ("a b@example.com", '"a b"@example.com'),
    ("user@x@example.com", '"user@x"@example.com'),
    ('a"b@example.com', '"a\\"b"@example.com'),
    ("@a,@b:user@example.com", "@a,@b:user@example.com"),
    (".a@example.com", '".a"@example.com'),
    ("", '""'),
])
def test_quote_822_local(address: str, quoted: str) -> None:
    assert quote_822_local(address) == quoted


@pytest.mark.parametrize(("address", "tokens", "internal"), [
    ('"a b"@x.y', [("qstring", "a b"), ("@", "@"), ("atom", "x"), (".", "."), ("atom", "y")],
     "a b@x.y"),
    ("a!b%c", [("atom", "a"), ("!", "!"), ("atom", "b"), ("%", "%"), ("atom", "c")], "a!b%c"),
    ("u@[1.2.3.4]", [("atom", "u"), ("@", "@"), ("domlit", "1.2.3.4")], "u@[1.2.3.4]"),
    ("a\\@b@c", [("qstring", "a@b"), ("@", "@"), ("atom", "c")], "a@b@c"),
    ("a(x)@b", [("atom", "a"), ("comment", "(x)"), ("@", "@"), ("atom", "b")], "a (x)@b"),
    ("a b", [("atom", "a"), ("atom", "b")], "a b"),
])
def test_scan_and_internalize(address: str, tokens: list[tuple[str, str]], internal: str) -> None:
    assert scan(address) == tokens
    assert internalize(scan(address)) == internal


@pytest.mark.parametrize(("address", "rewritten"), [
    ("site!user", "user@site"),
    ("a!b!user", "b!user@a"),
    ("user%site", "user@site"),
    ("user%a%b", "user%a@b"),
    ("user", "user@postbus.test"),
    ("@a:user@site", "user@site"),
    ("user@site.", "user@site"),
    ("@", ""),
])
def test_rewrite_rules(address: str, rewritten: str) -> None:
    rules = RewriteRules(origin="postbus.test", domain="postbus.test")
    assert internalize(rules.rewrite(scan(address))) == rewritten


def test_append_dot_mydomain() -> None:
    rules = RewriteRules(origin="postbus.test", domain="postbus.test", append_dot_domain=True)
    assert internalize(rules.rewrite(scan("user@host"))) == "user@host.postbus.test"
    assert internalize(rules.rewrite(scan("user@[1.2.3.4]"))) == "user@[1.2.3.4]"
    assert internalize(rules.rewrite(scan("user@a.b"))) == "user@a.b"


SENDER_CF = MAIN_CF + """\
relayhost = [smart.example]
sender_dependent_relayhost_maps = inline:{{alice@postbus.test=[alice.relay]:587},
    {@partner.example=[partner.relay]}, {<>=[bounce.relay]}, {bob@postbus.test=DUNNO}}
sender_dependent_default_transport_maps = inline:{{@bulk.example=bulk:},
    {carol@postbus.test=smtp:[carol.relay]}}
"""


@pytest.mark.parametrize(("sender", "address", "transport", "nexthop"), [
    ("alice@postbus.test", "a@example.com", "smtp", "[alice.relay]:587"),
    ("alice@postbus.test", "a@relay.example", "relay", "[alice.relay]:587"),
    ("alice@postbus.test", "a@postbus.test", "local", "mx.postbus.test"),  # local: no relayhost
    ("x@partner.example", "a@example.com", "smtp", "[partner.relay]"),
    ("", "a@example.com", "smtp", "[bounce.relay]"),  # empty_address_relayhost_maps_lookup_key
    ("bob@postbus.test", "a@example.com", "smtp", "[smart.example]"),  # DUNNO: relayhost
    ("x@bulk.example", "a@example.com", "bulk", "[smart.example]"),
    ("x@bulk.example", "a@relay.example", "relay", "[smart.example]"),  # default class only
    ("carol@postbus.test", "a@example.com", "smtp", "[carol.relay]"),  # transport:nexthop wins
    ("x@special.example", "a@special.example", "smtp", "[10.0.0.1]:2525"),  # transport_maps last
])
async def test_sender_dependent_routing(sender: str, address: str, transport: str,
                                        nexthop: str) -> None:
    reply = await Resolver(Config.from_text(SENDER_CF, "")).resolve(address, sender)
    assert (reply.transport, reply.nexthop) == (transport, nexthop)


RELOCATED_CF = MAIN_CF + """\
recipient_delimiter = +
relocated_maps = inline:{{joe@postbus.test=joe@new.example}, {@old.example=new.example},
    {smith=smith@elsewhere.example}, {@alias.example=new.example}}
"""


@pytest.mark.parametrize(("address", "nexthop"), [
    ("joe@postbus.test", "5.1.6 User has moved to joe@new.example"),
    ("joe+list@postbus.test", "5.1.6 User has moved to joe@new.example"),
    ("anyone@old.example", "5.1.6 User has moved to new.example"),
    ("smith@mx.postbus.test", "5.1.6 User has moved to smith@elsewhere.example"),
    ("user@alias.example", "5.1.6 User has moved to new.example"),
])
async def test_relocated_whatever_the_class(address: str, nexthop: str) -> None:
    reply = await Resolver(Config.from_text(RELOCATED_CF, "")).resolve(address)
    assert (reply.transport, reply.nexthop) == ("error", nexthop)


async def test_relocated_not_listed_and_not_local_bare_names() -> None:
    resolver = Resolver(Config.from_text(RELOCATED_CF, ""))
    assert (await resolver.resolve("bob@postbus.test")).transport == "local"
    # a bare name matches only in local domains ($myorigin, mydestination)
    assert (await resolver.resolve("smith@example.com")).transport == "smtp"


async def test_leading_dash_is_an_error_unless_allow_min_user() -> None:
    assert (await Resolver(Config.from_text(MAIN_CF, "")).resolve("-x@example.com")).error
    allow = Config.from_text(MAIN_CF + "allow_min_user = yes\n", "")
    assert not (await Resolver(allow).resolve("-x@example.com")).error


async def test_find_quotes_and_knows_local_domains(resolver: Resolver) -> None:
    maps = open_maps('inline:{{"a b"@postbus.test=quoted}, {c=bare}}')
    assert (await resolver.find(maps, "a b@postbus.test")) == Found("quoted")
    assert (await resolver.find(maps, "c@mx.postbus.test")) == Found("bare")
    assert await resolver.find(maps, "c@example.com") is None


PLAIN = ["user@postbus.test", "User@PostBus.Test", "a.b+ext@mx.postbus.test", "x@example.com",
         "o'neil#1~{x}@relay.example", "a-b_c=d?e^f`g|h@sub.mbox.example", "1@2.3",
         "user@alias.example", "slow@postbus.test", "u@localhost", "u@127.0.0.1", "u@-"]
NOT_PLAIN = ["user", "@postbus.test", "user%example.com@postbus.test", "a!b@postbus.test",
             "user@example.com.", "user@[127.0.0.1]", '"a b"@example.com', "a..b@example.com",
             ".a@example.com", "user@", "user@x@example.com", "a b@example.com"]


@pytest.mark.parametrize("address", PLAIN + NOT_PLAIN)
async def test_a_plain_address_skips_the_loop_with_its_result(
        resolver: Resolver, address: str) -> None:
    """The short path for plain addresses (no tokens) gives what the loop gives."""
    from postbus import resolve

    assert bool(resolve._PLAIN.fullmatch(address)) == (address in PLAIN)
    tokens, remote = await resolver._strip_local(address)
    assert await resolver._strip(address) == (internalize(tokens), remote)
