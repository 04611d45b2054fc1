"""The SPF check (pyspf) against a DNS server on loopback, with policyd-spf's replies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from policy.spf import Spf
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from tests.integration.delivery.peers import DnsServer

ZONE = {
    ("pass.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 -all"'],
    ("fail.test", "TXT"): ['"v=spf1 ip4:198.51.100.1 -all"'],
    ("soft.test", "TXT"): ['"v=spf1 ip4:198.51.100.1 ~all"'],
    ("neutral.test", "TXT"): ['"v=spf1 ?all"'],
    ("perm.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 bogus:x -all"'],
    ("helo.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 -all"'],
    ("badhelo.test", "TXT"): ['"v=spf1 -all"'],
    ("norecord.test", "A"): ["192.0.2.1"],
}


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    server = await DnsServer(ZONE, servfail=("tempfail.test",)).start()
    yield server
    server.close()


def spf(dns: DnsServer, extra: str = "") -> Spf:
    return Spf(Config.from_text(f"postbus_dns_servers = 127.0.0.1:{dns.port}\n"
                                "postbus_policy_spf_lookup_time = 5s\n" + extra))


def req(sender: str, helo: str = "nohelo.test", ip: str = "192.0.2.10",
        instance: str = "") -> dict[str, str]:
    return {"client_address": ip, "helo_name": helo, "sender": sender,
            "recipient": "bob@example.net", "instance": instance}


async def test_pass_prepends_received_spf(dns: DnsServer) -> None:
    assert await spf(dns).check(req("alice@pass.test")) == (
        "prepend Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=192.0.2.10; "
        "helo=nohelo.test; envelope-from=alice@pass.test; receiver=example.net ")


async def test_fail_is_rejected_as_policyd_spf_does(dns: DnsServer) -> None:
    assert await spf(dns).check(req("alice@fail.test")) == (
        "550 5.7.23 Message rejected due to: SPF fail - not authorized. Please see "
        "http://www.openspf.net/Why?s=mfrom;id=alice@fail.test;ip=192.0.2.10;r=example.net")


async def test_softfail_neutral_none_and_errors_are_prepended(dns: DnsServer) -> None:
    check = spf(dns)
    assert (await check.check(req("a@soft.test"))).startswith(
        "prepend Received-SPF: Softfail (mailfrom) identity=mailfrom; ")
    assert (await check.check(req("a@neutral.test"))).startswith(
        "prepend Received-SPF: Neutral (mailfrom) identity=mailfrom; ")
    # no record for the sender nor the HELO name (policyd-spf's spelling)
    assert await check.check(req("a@norecord.test")) == (
        "prepend Received-SPF: None (mailfrom) identity=mailfrom; client-ip=192.0.2.10; "
        "helo=nohelo.test; envelope-from=a@norecord.test; receiver=example.net ")
    assert (await check.check(req("a@perm.test"))).startswith(
        "prepend Received-SPF: Permerror (mailfrom) identity=mailfrom; ")
    assert (await check.check(req("a@tempfail.test"))).startswith(
        "prepend Received-SPF: Temperror (mailfrom) identity=mailfrom; ")


async def test_stricter_settings(dns: DnsServer) -> None:
    check = spf(dns, "postbus_policy_spf_mail_from_reject = Softfail\n"
                "postbus_policy_spf_permerror_reject = yes\n"
                "postbus_policy_spf_temperror_defer = yes\n"
                "postbus_policy_spf_hide_receiver = yes\n")
    assert (await check.check(req("a@soft.test"))).startswith(
        "550 5.7.23 Message rejected due to: ")
    assert (await check.check(req("a@perm.test"))).startswith(
        "550 5.7.24 Message rejected due to: ")
    assert (await check.check(req("a@tempfail.test"))).startswith(
        "defer_if_permit 4.7.24 Message deferred due to: ")
    assert (await check.check(req("a@pass.test"))).endswith("receiver=<UNKNOWN> ")


async def test_helo_is_checked_first(dns: DnsServer) -> None:
    check = spf(dns)
    assert (await check.check(req("a@pass.test", helo="badhelo.test"))).startswith(
        "550 5.7.23 Message rejected due to: SPF fail - not authorized. Please see "
        "http://www.openspf.net/Why?s=helo;id=badhelo.test;")
    # the null sender: the HELO result is the header
    assert (await check.check(req("", helo="helo.test"))).startswith(
        "prepend Received-SPF: Pass (sender SPF authorized) identity=helo; "
        "client-ip=192.0.2.10; helo=helo.test; envelope-from=<>; ")


async def test_one_header_per_message_and_local_clients(dns: DnsServer) -> None:
    check = spf(dns)
    assert (await check.check(req("a@pass.test", instance="m1"))).startswith("prepend ")
    assert await check.check(req("a@pass.test", instance="m1")) == "dunno"
    rejected = await check.check(req("a@fail.test", instance="m2"))
    assert rejected.startswith("550 ")
    assert await check.check(req("a@fail.test", instance="m2")) == rejected
    assert await check.check(req("a@fail.test", ip="127.0.0.1")) == (
        "prepend X-Comment: SPF check N/A for local connections - client-ip=127.0.0.1; "
        "helo=nohelo.test; envelope-from=a@fail.test; receiver=example.net ")


def test_bad_reason_template_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="bad template field 'reason'"):
        Spf(Config.from_text("postbus_policy_spf_reason_message = {reason}\n"))
    with pytest.raises(ConfigError, match="bad template field"):
        Spf(Config.from_text("postbus_policy_spf_reason_url = http://x/{4}\n"))
