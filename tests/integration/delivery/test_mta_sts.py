"""MTA-STS in the smtp agent against real peers on loopback: a DNS server with the
_mta-sts record, an HTTPS policy server and an aiosmtpd MX with STARTTLS, all with
certificates from a test CA; the policy cache and the TLS-RPT counters in a real Redis."""

from __future__ import annotations

import asyncio
import calendar
import email
import email.policy
import gzip
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from delivery_smtp.__main__ import main
from postbus.config.loader import Config
from postbus.maps.context import redis_client
from postbus.queue.entry import DeliveryJob
from postbus.servers import ServerProcess
from postbus.tlsrpt.send import send_day, send_once
from postbus.tlsrpt.store import PolicyInfo, day_entries, day_of, record
from tests.tls_certs import Pki

from .conftest import Bus, RunAgent
from .peers import DnsServer, Peer
from .sts_peers import PolicyServer, https_context, mx_peer, policy_text, set_txt, zone

pytestmark = pytest.mark.integration


@dataclass
class Remote:
    pki: Pki
    dns: DnsServer
    https: PolicyServer

    def settings(self, **more: str) -> dict[str, str]:
        return {
            "smtp_connection_cache_on_demand": "no", "myhostname": "mail.postbus.test",
            "postbus_dns_servers": f"127.0.0.1:{self.dns.port}", "postbus_mta_sts": "yes",
            "postbus_mta_sts_ca_file": str(self.pki.ca_file),
            "postbus_mta_sts_https_port": str(self.https.port),
            "postbus_mta_sts_cache_refresh": "0", "postbus_tlsrpt": "yes",
            "smtp_tls_CAfile": str(self.pki.ca_file), "smtp_tls_loglevel": "1", **more,
        }


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    pki = Pki.create(tmp_path / "pki")
    dns = await DnsServer(zone("1")).start()
    https = await PolicyServer(https_context(pki), policy_text("enforce", "mx.remote.test"))\
        .start()
    made = Remote(pki, dns, https)
    yield made
    dns.close()
    await made.https.close()


async def _send(bus: Bus, peer: Peer) -> tuple[str, str, str]:
    job = await bus.submit("smtp", f"remote.test:{peer.port}", ["bob@remote.test"])
    [result] = (await bus.status(job.queue_id)).results
    return result.status, result.dsn, result.reason


def _lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


async def _report(domain: str = "remote.test") -> list[tuple[int, list[tuple[str, str]]]]:
    """(successes, [(result type, MX host)]) per recorded policy of today."""
    entries = [e for e in await day_entries(redis_client(), day_of()) if e.domain == domain]
    return [(e.success, [(f["result-type"], f.get("receiving-mx-hostname", ""))
                         for f in e.failures]) for e in entries]


async def test_enforce_delivers_to_a_matching_mx_with_a_verified_certificate(
    bus: Bus, run_agent: RunAgent, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings())
        got = await _send(bus, peer)
        await run_agent.stop()
    assert got[0] == "sent"
    assert peer.handler.tls == [True]
    assert remote.https.requests == ["GET /.well-known/mta-sts.txt HTTP/1.1"]
    assert _lines(caplog, "MTA-STS policy for") == [
        "MTA-STS policy for remote.test: id=1 mode=enforce max_age=86400 mx=mx.remote.test"]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith(f"Verified TLS connection established to mx.remote.test[127.0.0.1]:"
                           f"{peer.port}: TLSv1.3 with cipher ")
    assert await _report() == [(1, [])]


async def test_enforce_defers_when_no_mx_is_in_the_policy(
    bus: Bus, run_agent: RunAgent, remote: Remote
) -> None:
    remote.https.policy = policy_text("enforce", "*.other.test", "mx.remote.example")
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings())
        got = await _send(bus, peer)
        await run_agent.stop()
    assert got == ("deferred", "4.7.5", "MTA-STS policy of remote.test (id=1, mode enforce) "
                   "allows none of its MX hosts: mx.remote.test")
    assert peer.handler.messages == []


async def test_enforce_defers_on_a_certificate_for_another_name_never_in_clear(
    bus: Bus, run_agent: RunAgent, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    remote.https.policy = policy_text("enforce", "*.remote.test")
    with mx_peer(remote.pki, cn="wrong.remote.test") as peer:
        await run_agent(main, "smtp", remote.settings())
        got = await _send(bus, peer)
        await run_agent.stop()
    assert got == ("deferred", "4.7.5", "Server certificate not verified")
    assert peer.handler.messages == []
    relay = f"mx.remote.test[127.0.0.1]:{peer.port}"
    assert _lines(caplog, "verification failed") == [
        f"server certificate verification failed for {relay}: num=62:hostname mismatch"]
    assert await _report() == [(0, [("certificate-host-mismatch", "mx.remote.test")])]


async def test_testing_mode_delivers_past_a_bad_certificate_and_records_it(
    bus: Bus, run_agent: RunAgent, remote: Remote, tmp_path: Path
) -> None:
    remote.https.policy = policy_text("testing", "mx.remote.test")
    with mx_peer(remote.pki, other_ca=tmp_path / "other") as peer:
        await run_agent(main, "smtp", remote.settings())
        got = await _send(bus, peer)
        await run_agent.stop()
    assert got[0] == "sent"
    assert peer.handler.tls == [True]
    assert await _report() == [(0, [("certificate-not-trusted", "mx.remote.test")])]


async def test_a_policy_table_entry_wins_over_mta_sts(
    bus: Bus, run_agent: RunAgent, remote: Remote
) -> None:
    remote.https.policy = policy_text("enforce", "mx.elsewhere.test")
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings(
            smtp_tls_policy_maps=f"inline:{{ {{remote.test:{peer.port}=may}} }}"))
        got = await _send(bus, peer)
        await run_agent.stop()
    assert got[0] == "sent"
    assert remote.https.requests == []


async def test_the_policy_is_cached_until_the_txt_id_changes(
    bus: Bus, run_agent: RunAgent, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings())
        first = await _send(bus, peer)
        remote.https.policy = policy_text("enforce", "mx.elsewhere.test")
        second = await _send(bus, peer)  # same id: the cached policy, no fetch
        assert len(remote.https.requests) == 1
        set_txt(remote.dns, "_mta-sts.remote.test", "v=STSv1; id=2")
        third = await _send(bus, peer)
        await run_agent.stop()
    assert (first[0], second[0]) == ("sent", "sent")
    assert len(remote.https.requests) == 2
    assert third == ("deferred", "4.7.5", "MTA-STS policy of remote.test (id=2, mode enforce) "
                     "allows none of its MX hosts: mx.remote.test")
    assert _lines(caplog, "MTA-STS policy for")[-1] == (
        "MTA-STS policy for remote.test: id=2 mode=enforce max_age=86400 mx=mx.elsewhere.test")


async def test_a_failed_fetch_keeps_the_cached_policy(
    bus: Bus, run_agent: RunAgent, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings())
        first = await _send(bus, peer)
        set_txt(remote.dns, "_mta-sts.remote.test", "v=STSv1; id=2")
        remote.https.status = 500
        second = await _send(bus, peer)
        await run_agent.stop()
    assert (first[0], second[0]) == ("sent", "sent")
    assert peer.handler.tls == [True, True]
    assert _lines(caplog, "fetch for") == [
        "MTA-STS policy fetch for remote.test (id=2) failed: https://mta-sts.remote.test"
        f"/.well-known/mta-sts.txt (port {remote.https.port}): HTTP status 500 X; "
        "using the cached policy id=1"]


async def test_a_fetch_with_an_untrusted_certificate_is_no_policy_and_is_recorded(
    bus: Bus, run_agent: RunAgent, remote: Remote, tmp_path: Path
) -> None:
    other = Pki.create(tmp_path / "other")  # the HTTPS server's CA is not the one we trust
    await remote.https.close()
    remote.https = await PolicyServer(https_context(other), remote.https.policy).start()
    with Peer() as peer:  # no STARTTLS: only a missing policy lets this through
        await run_agent(main, "smtp", remote.settings())
        got = await _send(bus, peer)
        await run_agent.stop()
    assert got[0] == "sent"
    assert await _report() == [(0, [("sts-webpki-invalid", "")])]


# -- TLS-RPT: the day's results as a report mail, through the queue to a sink -----------


async def _hand_out(bus: Bus, queue_id: str, nexthop: str) -> None:
    """A delivery job for a queued message, as the qmgr would make it."""
    got = await bus.store.queue.get(queue_id)
    assert got is not None
    entry, now = got[0], time.time()
    await bus.store.work.submit_job(DeliveryJob(
        queue_id=queue_id, transport="smtp", nexthop=nexthop, sender=entry.sender,
        recipients=entry.recipients, indexes=list(range(len(entry.recipients))), attempt=1,
        arrival_time=entry.arrival_time, size=entry.size, chunks=entry.chunks,
        queued_time=now, active_time=now, attempt_id=entry.attempt_id))


async def test_a_report_mail_carries_the_days_results_to_the_rua(
    bus: Bus, run_agent: RunAgent, remote: Remote, nats: ServerProcess, tmp_path: Path
) -> None:
    remote.https.policy = policy_text("testing", "mx.remote.test")
    set_txt(remote.dns, "_smtp._tls.remote.test", "v=TLSRPTv1; rua=mailto:tls-reports@remote.test")
    with mx_peer(remote.pki) as good, mx_peer(remote.pki, cn="other.test") as bad, \
            Peer() as sink:
        await run_agent(main, "smtp", remote.settings())
        assert (await _send(bus, good))[0] == "sent"
        assert (await _send(bus, good))[0] == "sent"
        assert (await _send(bus, bad))[0] == "sent"
        cfg = Config.from_text(
            f"postbus_nats_url = {nats.url}\npostbus_dns_servers = 127.0.0.1:{remote.dns.port}\n"
            "mydomain = postbus.test\nmyhostname = mail.postbus.test\n")
        day = day_of()
        [line] = await send_day(cfg, redis_client(), day)
        queue_id = line.split(":")[0]
        await _hand_out(bus, queue_id, f"[127.0.0.1]:{sink.port}")
        [result] = (await bus.status(queue_id)).results
        await run_agent.stop()
    assert result.status == "sent"
    [(sender, rcpts, content)] = sink.handler.messages
    assert (sender, rcpts) == ("postmaster@postbus.test", ["tls-reports@remote.test"])
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "remote.test"
    assert msg["TLS-Report-Submitter"] == "mail.postbus.test"
    [part] = [p for p in msg.iter_attachments()]
    assert part.get_content_type() == "application/tlsrpt+gzip"
    start = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    assert part.get_filename() == (
        f"mail.postbus.test!remote.test!{start}!{start + 86399}.json.gz")
    report = json.loads(gzip.decompress(part.get_content()))
    assert " ".join(str(msg["Subject"]).split()) == (
        f"Report Domain: remote.test Submitter: mail.postbus.test "
        f"Report-ID: <{report['report-id']}>")
    assert line == (f"{queue_id}: TLS-RPT report {report['report-id']} for remote.test "
                    "to tls-reports@remote.test")
    assert report["organization-name"] == "postbus.test"
    assert report["contact-info"] == "postmaster@postbus.test"
    assert report["date-range"] == {"start-datetime": f"{day}T00:00:00Z",
                                    "end-datetime": f"{day}T23:59:59Z"}
    assert report["policies"] == [{
        "policy": {"policy-type": "sts", "policy-domain": "remote.test",
                   "policy-string": ["version: STSv1", "mode: testing", "mx: mx.remote.test",
                                     "max_age: 86400"],
                   "mx-host": ["mx.remote.test"]},
        "summary": {"total-successful-session-count": 2, "total-failure-session-count": 1},
        "failure-details": [{"result-type": "certificate-host-mismatch",
                             "receiving-ip": "127.0.0.1",
                             "receiving-mx-hostname": "mx.remote.test",
                             "failed-session-count": 1}],
    }]


def _info() -> PolicyInfo:
    return PolicyInfo("remote.test", "sts", "1", policy_text("enforce", "mx.remote.test"),
                      ("mx.remote.test",))


async def test_an_https_rua_gets_the_gzipped_report_posted(
    bus: Bus, remote: Remote, nats: ServerProcess
) -> None:
    await record(redis_client(), _info(), "starttls-not-supported", "mx.remote.test",
                 "127.0.0.1")
    uri = f"https://mta-sts.remote.test:{remote.https.port}/tlsrpt"
    set_txt(remote.dns, "_smtp._tls.remote.test", f"v=TLSRPTv1;rua={uri}")
    cfg = Config.from_text(
        f"postbus_nats_url = {nats.url}\npostbus_dns_servers = 127.0.0.1:{remote.dns.port}\n"
        f"postbus_mta_sts_ca_file = {remote.pki.ca_file}\nmydomain = postbus.test\n")
    [line] = await send_day(cfg, redis_client(), day_of())
    [(first, ctype, body)] = remote.https.posts
    report = json.loads(gzip.decompress(body))
    assert (first, ctype) == ("POST /tlsrpt HTTP/1.1", "application/tlsrpt+gzip")
    assert line == f"TLS-RPT report {report['report-id']} for remote.test to {uri}: 202"
    assert report["policies"][0]["summary"] == {"total-successful-session-count": 0,
                                                "total-failure-session-count": 1}
    assert report["policies"][0]["failure-details"][0]["result-type"] == \
        "starttls-not-supported"


async def test_one_replica_a_day_sends_yesterdays_reports(
    bus: Bus, run_agent: RunAgent, remote: Remote, nats: ServerProcess,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.tlsrpt")
    yesterday = time.time() - 86400
    await record(redis_client(), _info(), "", "mx.remote.test", "127.0.0.1", when=yesterday)
    set_txt(remote.dns, "_smtp._tls.remote.test", "v=TLSRPTv1; rua=mailto:tlsrpt@remote.test")
    settings = remote.settings(postbus_nats_url=nats.url, mydomain="postbus.test")
    await run_agent(main, "smtp", settings)
    await run_agent(main, "relay", settings)
    deadline = time.monotonic() + 30
    while not _lines(caplog, "TLS-RPT report") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await run_agent.stop()
    [line] = _lines(caplog, "TLS-RPT report")
    assert line.endswith(" for remote.test to tlsrpt@remote.test")
    assert f": TLS-RPT report {day_of(yesterday)}T00:00:00Z_remote.test_" in line
    assert await redis_client().exists(f"postbus:tlsrpt:{day_of(yesterday)}:sent") == 1
    cfg = Config.from_text(f"postbus_dns_servers = 127.0.0.1:{remote.dns.port}\n")
    assert await send_once(cfg, redis_client(), day_of(yesterday)) is None  # sent already
