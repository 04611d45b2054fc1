"""DANE (smtp_tls_security_level = dane / dane-only, smtp_dns_support_level = dnssec)
against real peers on loopback: a DNS server that sets the AD bit for "signed" names and
serves TLSA records, and an aiosmtpd MX with STARTTLS and a certificate made in the test.

No smtp_tls_CAfile is configured: a session is only ever "Verified" by the TLSA records.
The texts are Postfix's, recorded from its source (a live comparison would need a
validating resolver on port 53 in resolv.conf):

- smtp_tls_policy.c dane_init(): ``dsb_simple(tls->why, "4.7.5", "TLSA lookup error for
  %s:%u", STR(iter->host), ntohs(iter->port))``; dane_incompat(..., "non DNSSEC
  destination"), "no TLSA records found", "TLSA records unusable" (``vdsb_simple(tls->why,
  "4.7.5", fmt, ap)`` for dane-only); ``"%s: %s configured with dnssec lookups disabled"``
  (msg_warn, STR(iter->dest), policy_name(level)); MARK_INVALID's "client TLS
  configuration problem";
- tls_verify.c tls_log_verify_error(): ``"%s certificate verification failed for %s:
  num=%d:%s"`` with OpenSSL's X509_V_ERR_DANE_NO_MATCH (65) "No matching DANE TLSA
  records" and X509_V_ERR_HOSTNAME_MISMATCH (62) "hostname mismatch";
- tls_client.c tls_log_summary(): "Verified" when secured, "Trusted" for half-dane;
  smtp_proto.c: "Server certificate not verified" (4.7.5).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from delivery_smtp.__main__ import main
from tests.tls_certs import Pki

from .conftest import Bus, RunAgent
from .peers import DnsServer, Peer
from .sts_peers import PolicyServer, https_context, mx_peer, policy_text

pytestmark = pytest.mark.integration

NOT_VERIFIED = ("deferred", "4.7.5", "Server certificate not verified")


def spki_sha256(cert_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())  # the leaf comes first
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def ca_sha256(pki: Pki) -> str:
    return hashlib.sha256(pki.ca.public_bytes(Encoding.DER)).hexdigest()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    server = await DnsServer({
        ("remote.test", "MX"): ["10 mx.remote.test."],
        ("mx.remote.test", "A"): ["127.0.0.1"],
    }, secure=("*",)).start()
    try:
        yield server
    finally:
        server.close()


def tlsa(dns: DnsServer, peer: Peer, *records: str) -> str:
    name = f"_{peer.port}._tcp.mx.remote.test"
    dns.zone[(name, "TLSA")] = list(records)
    dns.names.add(name)
    return name


async def _send(bus: Bus, run_agent: RunAgent, dns: DnsServer, peer: Peer,
                **settings: str) -> tuple[str, str, str]:
    await run_agent(main, "smtp", {
        "smtp_connection_cache_on_demand": "no", "myhostname": "mail.postbus.test",
        "postbus_dns_servers": f"127.0.0.1:{dns.port}", "smtp_tls_loglevel": "1",
        "smtp_tls_security_level": "dane", "smtp_dns_support_level": "dnssec", **settings,
    })
    # an old message: a may-level TLS failure would be retried in clear text
    job = await bus.submit("smtp", f"remote.test:{peer.port}", ["bob@remote.test"], age=3600)
    [result] = (await bus.status(job.queue_id)).results
    await run_agent.stop()
    return result.status, result.dsn, result.reason


def _lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


async def test_dane_ee_match_is_verified_whatever_the_certificate_names(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(pki, cn="other.example") as peer:
        tlsa(dns, peer, f"3 1 1 {spki_sha256(pki.root / 'mx-other.example.crt')}")
        got = await _send(bus, run_agent, dns, peer)
    assert got[0] == "sent"
    assert peer.handler.tls == [True]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith(f"Verified TLS connection established to mx.remote.test[127.0.0.1]:"
                           f"{peer.port}: TLSv1.3 with cipher ")


async def test_dane_ee_mismatch_defers_and_never_sends_in_clear(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(pki) as peer:
        tlsa(dns, peer, "3 1 1 " + "ab" * 32, "3 0 2 " + "cd" * 64)
        got = await _send(bus, run_agent, dns, peer)
    assert got == NOT_VERIFIED
    assert peer.handler.messages == []
    relay = f"mx.remote.test[127.0.0.1]:{peer.port}"
    assert _lines(caplog, "verification failed") == [
        f"server certificate verification failed for {relay}: num=65:No matching DANE TLSA "
        "records"]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith(f"Untrusted TLS connection established to {relay}: ")


async def test_dane_ta_verifies_the_chain_and_the_mx_host_name(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(pki, cn="mx.remote.test") as peer:
        tlsa(dns, peer, f"2 0 1 {ca_sha256(pki)}")
        good = await _send(bus, run_agent, dns, peer)
    assert good[0] == "sent"
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith("Verified TLS connection established to mx.remote.test[")
    caplog.clear()
    with mx_peer(pki, cn="wrong.remote.test") as peer:
        tlsa(dns, peer, f"2 0 1 {ca_sha256(pki)}")
        bad = await _send(bus, run_agent, dns, peer)
    assert bad == NOT_VERIFIED
    assert peer.handler.messages == []
    assert _lines(caplog, "verification failed") == [
        f"server certificate verification failed for mx.remote.test[127.0.0.1]:{peer.port}: "
        "num=62:hostname mismatch"]


async def test_an_insecure_zone_is_opportunistic_tls(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    dns.secure.clear()  # no AD bit anywhere: the TLSA records are not even asked for
    with mx_peer(pki) as peer:
        name = tlsa(dns, peer, "3 1 1 " + "ab" * 32)
        dns.servfail = (name,)  # would defer if it were looked up
        got = await _send(bus, run_agent, dns, peer)
    assert got[0] == "sent"
    assert peer.handler.tls == [True]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith("Untrusted TLS connection established to mx.remote.test[")


async def test_dane_only_without_tlsa_records_defers(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki
) -> None:
    with mx_peer(pki) as peer:
        got = await _send(bus, run_agent, dns, peer, smtp_tls_security_level="dane-only")
    assert got == ("deferred", "4.7.5", "no TLSA records found")
    assert peer.handler.messages == []


async def test_a_tlsa_lookup_failure_defers(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki
) -> None:
    with mx_peer(pki) as peer:
        dns.servfail = (tlsa(dns, peer, "3 1 1 " + "ab" * 32),)
        got = await _send(bus, run_agent, dns, peer)
    assert got == ("deferred", "4.7.5", f"TLSA lookup error for mx.remote.test:{peer.port}")
    assert peer.handler.messages == []


async def test_unusable_records_mean_encrypt_for_dane_and_defer_for_dane_only(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(pki) as peer:
        tlsa(dns, peer, f"1 1 1 {spki_sha256(pki.root / 'mx-mx.remote.test.crt')}",
             f"0 0 1 {ca_sha256(pki)}")  # PKIX-EE, PKIX-TA: not for SMTP (RFC 7672)
        only = await _send(bus, run_agent, dns, peer, smtp_tls_security_level="dane-only")
        dane = await _send(bus, run_agent, dns, peer)
    assert only == ("deferred", "4.7.5", "TLSA records unusable")
    assert dane[0] == "sent"
    assert peer.handler.tls == [True]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith("Untrusted TLS connection established to mx.remote.test[")


async def test_without_dnssec_lookups_dane_warns_and_a_policy_entry_dane_only_defers(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(pki) as peer:
        tlsa(dns, peer, f"3 1 1 {spki_sha256(pki.root / 'mx-mx.remote.test.crt')}")
        dest = f"remote.test:{peer.port}"
        plain = await _send(bus, run_agent, dns, peer, smtp_dns_support_level="enabled")
        table = await _send(bus, run_agent, dns, peer, smtp_tls_security_level="may",
                            smtp_tls_policy_maps=f"inline:{{ {{{dest} = dane-only}} }}",
                            smtp_dns_support_level="enabled")
    assert plain[0] == "sent"
    assert _lines(caplog, "dnssec lookups disabled") == [
        f"{dest}: dane configured with dnssec lookups disabled",
        f"{dest}: dane-only configured with dnssec lookups disabled"]
    assert table == ("deferred", "4.7.5", "client TLS configuration problem")
    assert len(peer.handler.messages) == 1


async def test_a_policy_entry_dane_only_delivers_with_a_match(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki
) -> None:
    with mx_peer(pki) as peer:
        tlsa(dns, peer, f"3 1 1 {spki_sha256(pki.root / 'mx-mx.remote.test.crt')}")
        dest = f"remote.test:{peer.port}"
        got = await _send(bus, run_agent, dns, peer, smtp_tls_security_level="may",
                          smtp_tls_policy_maps=f"inline:{{ {{{dest} = dane-only}} }}")
    assert got[0] == "sent"
    assert peer.handler.tls == [True]


async def test_dane_wins_over_an_mta_sts_policy_that_would_refuse(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    https = await PolicyServer(https_context(pki), policy_text("enforce", "*.other.test"))\
        .start()
    dns.zone[("_mta-sts.remote.test", "TXT")] = ['"v=STSv1; id=1"']
    dns.zone[("mta-sts.remote.test", "A")] = ["127.0.0.1"]
    dns.names |= {"_mta-sts.remote.test", "mta-sts.remote.test"}
    sts = {"postbus_mta_sts": "yes", "postbus_mta_sts_ca_file": str(pki.ca_file),
           "postbus_mta_sts_https_port": str(https.port)}
    try:
        with mx_peer(pki, cn="other.example") as peer:
            name = tlsa(dns, peer, f"3 1 1 {spki_sha256(pki.root / 'mx-other.example.crt')}")
            daned = await _send(bus, run_agent, dns, peer, **sts)
            dns.zone.pop((name, "TLSA"))  # no DANE: MTA-STS enforce decides
            dns.names.discard(name)
            refused = await _send(bus, run_agent, dns, peer, **sts)
    finally:
        await https.close()
    assert daned[0] == "sent"
    assert refused == ("deferred", "4.7.5", "MTA-STS policy of remote.test (id=1, mode "
                       "enforce) allows none of its MX hosts: mx.remote.test")
    assert len(peer.handler.messages) == 1


async def test_an_insecure_mx_rrset_with_a_secure_mx_host_is_half_dane(
    bus: Bus, run_agent: RunAgent, dns: DnsServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(pki, cn="other.example") as peer:
        name = tlsa(dns, peer, f"3 1 1 {spki_sha256(pki.root / 'mx-other.example.crt')}")
        dns.secure = {"mx.remote.test", name}  # remote.test's MX RRset has no AD bit
        half = await _send(bus, run_agent, dns, peer)
        may = await _send(bus, run_agent, dns, peer, smtp_tls_dane_insecure_mx_policy="may")
        only = await _send(bus, run_agent, dns, peer, smtp_tls_security_level="dane-only")
    assert half[0] == "sent" and may[0] == "sent"
    assert only == ("deferred", "4.7.5", "non DNSSEC destination")
    lines = _lines(caplog, "TLS connection established")
    assert [line.split(" TLS ")[0] for line in lines] == ["Trusted", "Untrusted"]
