"""The restrictions that ask the DNS, against a DNS server this test runs on loopback
(never the machine's resolver): unknown HELO names and address domains, nullMX,
DNS block and allow lists, and the 4xx each gives when the DNS fails for now.
Reply texts are Postfix 3.7's (smtpd_check.c), spelled out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from ingress_smtpd.restrictions import Policy
from postbus.config.conv import ConfigError
from tests.integration.delivery.peers import DnsServer
from tests.integration.ingress.conftest import Running, StartSmtpd, make_config

pytestmark = pytest.mark.integration

ZONE = {
    ("known.test", "A"): ["192.0.2.1"],
    ("mx.test", "MX"): ["10 mail.mx.test."],
    ("mx.test", "NS"): ["ns.mx.test."],
    ("mail.mx.test", "A"): ["192.0.2.9"],
    ("aonly.test", "A"): ["192.0.2.2"],
    ("null.test", "MX"): ["0 ."],
    ("1.0.0.127.bl.test", "A"): ["127.0.0.2"],
    ("1.0.0.127.bl.test", "TXT"): ['"listed for testing"'],
    ("1.0.0.127.other.test", "A"): ["127.0.0.9"],
    ("1.0.0.127.wl.test", "A"): ["127.0.0.2"],
    ("spam.test.rhs.test", "A"): ["127.0.0.2"],
}


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    server = await DnsServer(ZONE, servfail=("fail.test", "1.0.0.127.failwl.test")).start()
    yield server
    server.close()


async def dialogue(run: Running, *lines: str) -> list[str]:
    client = await run.client()
    out = [await client.cmd(line) for line in lines]
    await client.cmd("QUIT")
    return out


async def test_unknown_helo_hostname(smtpd: StartSmtpd, dns: DnsServer) -> None:
    run = await smtpd(postbus_dns_servers=f"127.0.0.1:{dns.port}", mynetworks="127.0.0.0/8",
                      smtpd_recipient_restrictions="reject_unknown_helo_hostname, "
                      "permit_mynetworks, reject")
    rcpt = ["MAIL FROM:<a@example.org>", "RCPT TO:<u@postbus.test>"]
    assert (await dialogue(run, "EHLO known.test", *rcpt))[-1] == "250 2.1.5 Ok"
    assert (await dialogue(run, "HELO nx.test", *rcpt))[-1] == \
        "450 4.7.1 <nx.test>: Helo command rejected: Host not found"
    # a temporary DNS failure: defer_if_permit, and permit_mynetworks then permits
    assert (await dialogue(run, "HELO fail.test", *rcpt))[-1] == \
        "450 4.7.1 <fail.test>: Helo command rejected: Host not found"
    assert (await dialogue(run, "HELO [1.2.3.4]", *rcpt))[-1] == "250 2.1.5 Ok"


async def test_unknown_sender_and_recipient_domains(smtpd: StartSmtpd, dns: DnsServer) -> None:
    run = await smtpd(postbus_dns_servers=f"127.0.0.1:{dns.port}", mynetworks="127.0.0.0/8",
                      smtpd_recipient_restrictions="reject_unknown_sender_domain, "
                      "reject_unknown_recipient_domain, permit_mynetworks, reject")

    async def rcpt(sender: str, recipient: str) -> str:
        lines = await dialogue(run, "EHLO c", f"MAIL FROM:<{sender}>", f"RCPT TO:<{recipient}>")
        return lines[-1]

    assert await rcpt("a@mx.test", "b@aonly.test") == "250 2.1.5 Ok"
    assert await rcpt("a@nx.test", "b@aonly.test") == \
        "450 4.1.8 <a@nx.test>: Sender address rejected: Domain not found"
    assert await rcpt("a@mx.test", "b@nx.test") == \
        "450 4.1.2 <b@nx.test>: Recipient address rejected: Domain not found"
    assert await rcpt("a@null.test", "b@aonly.test") == \
        "550 5.7.27 <a@null.test>: Sender address rejected: Domain null.test does not accept " \
        "mail (nullMX)"
    assert await rcpt("a@mx.test", "b@null.test") == \
        "556 5.1.10 <b@null.test>: Recipient address rejected: Domain null.test does not " \
        "accept mail (nullMX)"
    assert await rcpt("a@fail.test", "b@aonly.test") == \
        "450 4.1.8 <a@fail.test>: Sender address rejected: Domain not found"
    assert await rcpt("", "u@postbus.test") == "250 2.1.5 Ok"  # ours: no lookup
    # unknown_address_reject_code: the reply code and the DSN class follow it
    run = await smtpd(postbus_dns_servers=f"127.0.0.1:{dns.port}", mynetworks="127.0.0.0/8",
                      unknown_address_reject_code="550",
                      smtpd_recipient_restrictions="reject_unknown_sender_domain, permit")
    assert await rcpt("a@nx.test", "u@postbus.test") == \
        "550 5.1.8 <a@nx.test>: Sender address rejected: Domain not found"


async def test_dns_block_and_allow_lists(smtpd: StartSmtpd, dns: DnsServer) -> None:
    servers = f"127.0.0.1:{dns.port}"
    rcpt = ["EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<u@postbus.test>"]
    run = await smtpd(postbus_dns_servers=servers,
                      smtpd_client_restrictions="reject_rbl_client other.test=127.0.0.2, "
                      "reject_rbl_client bl.test")
    assert (await dialogue(run, *rcpt))[-1] == (
        "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using bl.test; "
        "listed for testing")
    run = await smtpd(postbus_dns_servers=servers,
                      smtpd_client_restrictions="permit_dnswl_client wl.test, "
                      "reject_rbl_client bl.test")
    assert (await dialogue(run, *rcpt))[-1] == "250 2.1.5 Ok"
    run = await smtpd(postbus_dns_servers=servers,
                      smtpd_sender_restrictions="reject_rhsbl_sender rhs.test")
    assert (await dialogue(run, "EHLO c", "MAIL FROM:<s@spam.test>", "RCPT TO:<u@postbus.test>")
            )[-1] == ("554 5.7.1 Service unavailable; Sender address [s@spam.test] blocked "
                      "using rhs.test")
    # an allow list that cannot answer: a later reject becomes a deferral
    run = await smtpd(postbus_dns_servers=servers,
                      smtpd_client_restrictions="permit_dnswl_client failwl.test, reject")
    assert (await dialogue(run, *rcpt))[-1] == \
        "450 4.7.1 <127.0.0.1>: Client host rejected: Service unavailable"


async def test_unknown_client_hostname(smtpd: StartSmtpd) -> None:
    run = await smtpd(smtpd_client_restrictions="reject_unknown_client_hostname")
    lines = await dialogue(run, "EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<u@postbus.test>")
    assert lines[-1] == "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.1]"
    run = await smtpd(smtpd_client_restrictions="reject_unknown_reverse_client_hostname",
                      unknown_client_reject_code="550")
    lines = await dialogue(run, "EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<u@postbus.test>")
    assert lines[-1] == \
        "550 5.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.1]"


async def test_unknown_client_temporary_and_forged(smtpd: StartSmtpd) -> None:
    """smtpd_peername_lookup = yes: a PTR lookup that fails for now gives 450 whatever
    unknown_client_reject_code says; a PTR name that does not resolve back is not the
    client's name (the code applies) but is its reverse name."""
    rcpt = ["EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<u@postbus.test>"]
    for zone, servfail, client, reverse in [
        ({}, ("1.0.0.127.in-addr.arpa",),
         "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.1]",
         "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.1]"),
        ({("1.0.0.127.in-addr.arpa", "PTR"): ["forged.test."]}, (),
         "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.1]",
         "250 2.1.5 Ok"),
        ({("1.0.0.127.in-addr.arpa", "PTR"): ["host.test."], ("host.test", "A"): ["127.0.0.1"]},
         (), "250 2.1.5 Ok", "250 2.1.5 Ok"),
    ]:
        server = await DnsServer(zone, servfail=servfail).start()
        try:
            for check, want in [("reject_unknown_client_hostname", client),
                                ("reject_unknown_reverse_client_hostname", reverse)]:
                run = await smtpd(postbus_dns_servers=f"127.0.0.1:{server.port}",
                                  smtpd_peername_lookup="yes", unknown_client_reject_code="550",
                                  smtpd_client_restrictions=check)
                assert (await dialogue(run, *rcpt))[-1] == want, (zone, check)
        finally:
            server.close()


async def test_rhswl_client_and_sleep(smtpd: StartSmtpd) -> None:
    zone = {("1.0.0.127.in-addr.arpa", "PTR"): ["host.test."], ("host.test", "A"): ["127.0.0.1"],
            ("host.test.wl.test", "A"): ["127.0.0.2"]}
    server = await DnsServer(zone).start()
    rcpt = ["EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<u@postbus.test>"]
    try:
        for allow, want in [("wl.test", "250 2.1.5 Ok"), ("other.test", (
                "554 5.7.1 <host.test[127.0.0.1]>: Client host rejected: Access denied"))]:
            run = await smtpd(postbus_dns_servers=f"127.0.0.1:{server.port}",
                              smtpd_peername_lookup="yes",
                              smtpd_client_restrictions=f"permit_rhswl_client {allow}, reject")
            assert (await dialogue(run, *rcpt))[-1] == want
        run = await smtpd(smtpd_client_restrictions="sleep 1, permit")
        started = time.monotonic()
        assert (await dialogue(run, *rcpt))[-1] == "250 2.1.5 Ok"
        assert time.monotonic() - started >= 1
    finally:
        server.close()


async def test_mx_ns_and_a_access(
    smtpd: StartSmtpd, dns: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def sender(restriction: str, address: str) -> str:
        run = await smtpd(postbus_dns_servers=f"127.0.0.1:{dns.port}",
                          smtpd_sender_restrictions=restriction)
        lines = await dialogue(run, "EHLO c", f"MAIL FROM:<{address}>", "RCPT TO:<u@postbus.test>")
        return lines[-1]

    assert await sender("check_sender_mx_access inline:{{192.0.2.9=REJECT bad mx}}",
                        "a@mx.test") == "554 5.7.1 <a@mx.test>: Sender address rejected: bad mx"
    assert await sender("check_sender_mx_access inline:{{mail.mx.test=REJECT by name}}",
                        "a@mx.test") == "554 5.7.1 <a@mx.test>: Sender address rejected: by name"
    assert await sender("check_sender_ns_access inline:{{ns.mx.test=REJECT bad ns}}",
                        "a@sub.mx.test") == \
        "554 5.7.1 <a@sub.mx.test>: Sender address rejected: bad ns"
    assert await sender("check_sender_a_access inline:{{192.0.2.2=REJECT bad a}}",
                        "a@aonly.test") == \
        "554 5.7.1 <a@aonly.test>: Sender address rejected: bad a"
    assert await sender("check_sender_mx_access inline:{{192.0.2.9=REJECT}}", "a@aonly.test") \
        == "250 2.1.5 Ok"  # no MX: the domain is its own mail host, and not listed
    assert await sender("check_sender_mx_access inline:{{192.0.2.9=OK}}", "a@mx.test") == \
        "451 4.3.5 Server configuration error"
    assert "restriction check_sender_mx_access returns OK for a@mx.test" in caplog.text
    assert "use DUNNO instead of OK if you want to make an exception" in caplog.text


@pytest.mark.parametrize(("setting", "error"), [
    ("reject_unverified_sender", "restriction reject_unverified_sender is not supported: "
     "Postbus has no address verification service (verify(8))"),
    ("permit_mx_backup", "restriction permit_mx_backup is not supported yet by Postbus"),
    ("sleep x", "restriction sleep must be followed by number"),
    ("reject_rbl_client", "restriction reject_rbl_client requires domain name argument"),
    ("frobnicate", 'unknown smtpd restriction: "frobnicate"'),
    ("check_policy_service inet:nohost", "policy service inet:nohost: bad inet:host:port"),
    ("check_policy_service { inet:127.0.0.1:9, bogus=1 }", 'unknown attribute "bogus"'),
    ("check_policy_service", "must be followed by transport:server"),
    ("hash:/etc/postfix/access", "specify a check_*_access restriction before the table"),
])
def test_what_is_not_there_is_refused_at_start(setting: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Policy(make_config(smtpd_sender_restrictions=setting))
    assert error in str(exc.value)


def test_a_restriction_class_is_checked_at_start_even_if_only_a_table_names_it() -> None:
    cfg = make_config(smtpd_restriction_classes="mine", mine="reject_unverified_recipient")
    with pytest.raises(ConfigError) as exc:
        Policy(cfg)
    assert "restriction reject_unverified_recipient is not supported" in str(exc.value)
    assert "parameter mine" in str(exc.value)
