"""smtp_tls_policy_maps entries and certificate name matching, as Postfix reads them."""

from __future__ import annotations

import logging

import pytest

from delivery_smtp.tls_client import Peer, certificate_names, name_matches
from delivery_smtp.tls_policy import PROBLEM, TlsPolicies, TlsPolicy
from postbus.config.loader import Config

TABLE = (
    "inline:{ {.test = encrypt ciphers=high}, "
    "{[mx.remote.test]:587 = secure match=.remote.test match=example.net protocols=>=TLSv1.2}, "
    "{plain.example = none}, {remote.example = verify exclude=3DES} }"
)


def policies(table: str = TABLE, extra: str = "") -> TlsPolicies:
    return TlsPolicies(Config.from_text(f"smtp_tls_policy_maps = {table}\n{extra}"))


async def test_entries_and_defaults() -> None:
    p = policies(extra="smtp_tls_security_level = may\nsmtp_tls_exclude_ciphers = RC4\n")
    assert await p.policy("mx.remote.test", True) == TlsPolicy(
        "encrypt", protocols=">=TLSv1", grade="high", exclude="RC4 eNULL")  # from ".test"
    assert await p.policy("[mx.remote.test]:587", False) == TlsPolicy(
        "secure", protocols=">=TLSv1.2", grade="medium", exclude="RC4 aNULL",
        match=(".remote.test", "example.net"))
    # a verbatim [host] next hop is looked up alone: main.cf's level
    assert await p.policy("[mx.remote.test]", False) == TlsPolicy(
        "may", protocols=">=TLSv1", grade="medium", exclude="RC4")
    assert await p.policy("plain.example", True) == TlsPolicy("none")
    assert await p.policy("remote.example", True) == TlsPolicy(
        "verify", protocols=">=TLSv1", grade="medium", exclude="3DES aNULL", match=("hostname",))


async def test_servername_from_the_entry_or_main_cf() -> None:
    p = policies("inline:{ {a.test = may servername=hostname}, {b.test = may} }",
                 "smtp_tls_servername = sni.example\n")
    assert (await p.policy("a.test", True)).sni == "hostname"  # type: ignore[union-attr]
    assert (await p.policy("b.test", True)).sni == "sni.example"  # type: ignore[union-attr]
    assert (await policies().policy("remote.example", True)).sni == ""  # type: ignore[union-attr]


@pytest.mark.parametrize(("entry", "warning"), [
    ("bogus", 'invalid security level "bogus"'),
    ("verify ciphers=high ciphers=low", 'attribute "ciphers" is specified multiple times'),
    ("encrypt match=x.test", 'attribute "match" invalid at security level "encrypt"'),
    ("may foo=bar", 'invalid attribute name: "foo"'),
    ("may protocols", 'malformed attribute/value pair "protocols"'),
    ("verify ciphers=", 'attribute "ciphers" has empty value'),
    ("fingerprint", 'TLS security level "fingerprint" for x.test is not supported yet by '
     'Postbus'),
    ("dane match=x.test", 'attribute "match" invalid at security level "dane"'),
    ("verify tafile=/etc/ta.pem", 'attribute "tafile" is not supported yet by Postbus'),
    ("may servername=bad_name", '"servername=bad_name" specifies an invalid hostname'),
])
async def test_entries_postfix_refuses_defer_the_destination(
    entry: str, warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    got = await policies(f"inline:{{ {{x.test = {entry}}} }}").policy("x.test", True)
    assert got == PROBLEM
    assert (got.status, got.dsn, got.reason) == (
        "deferred", "4.7.5", "client TLS configuration problem")
    assert any(warning in r.getMessage() for r in caplog.records), caplog.text
    if not entry.startswith("fingerprint"):
        assert caplog.records[0].getMessage().startswith(
            'smtp_tls_policy_maps, next-hop destination "x.test": ')


PEER = Peer("mx.remote.test[10.0.0.1]:25", host="mx.remote.test", nexthop="remote.test")


@pytest.mark.parametrize(("name", "pattern", "ok"), [
    ("mx.remote.test", "hostname", True),
    ("MX.Remote.Test", "hostname", True),
    ("other.remote.test", "hostname", False),
    ("remote.test", "nexthop", True),
    ("mx.remote.test", "nexthop", False),
    ("mx.remote.test", "dot-nexthop", True),
    ("remote.test", "dot-nexthop", False),
    ("a.b.remote.test", ".remote.test", True),
    ("*.remote.test", "hostname", True),  # one label
    ("*.test", "hostname", False),
    ("m*.remote.test", "hostname", False),  # no partial wildcards
    ("mx.remote.test", "mx.remote.test", True),
])
def test_names_match_as_openssl_checks_them(name: str, pattern: str, ok: bool) -> None:
    assert name_matches(name, pattern, PEER) is ok


def test_names_are_the_dns_alt_names_else_the_cn() -> None:
    cert = {"subject": ((("commonName", "cn.test"),),),
            "subjectAltName": (("DNS", "a.test"), ("IP Address", "10.0.0.1"), ("DNS", "b.test"))}
    assert certificate_names(cert) == ["a.test", "b.test"]
    assert certificate_names({"subject": cert["subject"]}) == ["cn.test"]
