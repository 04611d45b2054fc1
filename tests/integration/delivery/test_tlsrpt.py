"""TLS-RPT (RFC 8460): results recorded by the smtp agent under MTA-STS, the daily report
built from them and sent to the domain's rua (mail through the queue to a sink, or an HTTPS
POST), once a day across replicas, and the postbus tlsrpt command."""

from __future__ import annotations

import asyncio
import calendar
import email
import email.policy
import gzip
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery_smtp.__main__ import main
from postbus.config.loader import Config
from postbus.maps.context import redis_client
from postbus.queue.entry import DeliveryJob
from postbus.servers import ServerProcess
from postbus.tlsrpt.send import send_day, send_once
from postbus.tlsrpt.store import PolicyInfo, day_of, record

from .conftest import Bus, RunAgent
from .peers import Peer
from .sts_peers import Remote, mx_peer, policy_text, remote_peers, set_txt
from .test_mta_sts import _lines, _report, _send

pytestmark = pytest.mark.integration


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    async with remote_peers(tmp_path) as made:
        yield made


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


async def test_testing_mode_records_an_mx_outside_the_policy_and_no_starttls(
    bus: Bus, run_agent: RunAgent, remote: Remote
) -> None:
    remote.https.policy = policy_text("testing", "mx.elsewhere.test")
    with Peer() as peer:  # no STARTTLS
        await run_agent(main, "smtp", remote.settings())
        got = await _send(bus, peer)
        remote.https.policy = policy_text("testing", "*.remote.test")
        set_txt(remote.dns, "_mta-sts.remote.test", "v=STSv1; id=2")
        again = await _send(bus, peer)
        await run_agent.stop()
    assert (got[0], again[0]) == ("sent", "sent")
    reports = await _report()
    assert sorted(reports) == [(0, [("starttls-not-supported", "mx.remote.test")]),
                               (0, [("validation-failure", "mx.remote.test")])]


async def test_the_tlsrpt_command_shows_the_day_and_sends_now(
    bus: Bus, remote: Remote, nats: ServerProcess, redis: ServerProcess, tmp_path: Path
) -> None:
    await record(redis_client(), _info(), "", "mx.remote.test", "127.0.0.1")
    set_txt(remote.dns, "_smtp._tls.remote.test", "v=TLSRPTv1; rua=mailto:tls@remote.test")
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"postbus_nats_url = {nats.url}\npostbus_redis_url = {redis.url}/0\n"
        f"postbus_dns_servers = 127.0.0.1:{remote.dns.port}\nmydomain = postbus.test\n"
        f"maillog_file = {tmp_path / 'maillog'}\n")

    def postbus(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
                              capture_output=True, text=True, timeout=60)

    shown = await asyncio.to_thread(postbus, "tlsrpt")
    assert (shown.returncode, shown.stderr) == (0, "")
    assert [json.loads(line)["summary"] for line in shown.stdout.splitlines()] == [
        {"total-successful-session-count": 1, "total-failure-session-count": 0}]
    sent = await asyncio.to_thread(postbus, "tlsrpt", "--send-now")
    assert (sent.returncode, sent.stderr) == (0, "")
    queue_id, _, text = sent.stdout.strip().partition(": ")
    assert text.startswith(f"TLS-RPT report {day_of()}T00:00:00Z_remote.test_")
    assert text.endswith(" for remote.test to tls@remote.test")
    got = await bus.store.queue.get(queue_id)
    assert got is not None
    assert [r.address for r in got[0].recipients] == ["tls@remote.test"]
