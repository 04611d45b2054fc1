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
