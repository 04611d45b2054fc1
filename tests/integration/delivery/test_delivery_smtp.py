"""delivery-smtp against real servers: jobs in over JetStream, one DeliveryStatus out."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from delivery_smtp.__main__ import main
from postbus.servers import ServerProcess, free_port

from .conftest import MASTER_CF, MESSAGE, Bus, RunAgent, need
from .peers import DnsServer, Handler, Peer, SmtpSink, server_tls

pytestmark = pytest.mark.integration

FAST = {"smtp_connection_cache_time_limit": "2s", "myhostname": "mail.postbus.test"}


async def test_sent_to_aiosmtpd_with_content_intact(
    bus: Bus, run_agent: RunAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with Peer() as peer:
        await run_agent(main, "smtp", FAST)
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
        status = await bus.status(job.queue_id)
        await run_agent.stop()
    [result] = status.results
    relay = f"127.0.0.1[127.0.0.1]:{peer.port}"
    assert (result.status, result.dsn, result.reason) == (
        "sent", "2.0.0", "250 2.0.0 Ok: queued as REMOTE1"
    )
    assert result.relay == relay
    [(sender, rcpts, content)] = peer.handler.messages
    assert (sender, rcpts) == ("alice@postbus.test", ["bob@remote.test"])
    assert content == MESSAGE  # headers, body, the leading dot and "From " untouched
    line = next(r.getMessage() for r in caplog.records if job.queue_id in r.getMessage())
    assert line.startswith(f"{job.queue_id}: to=<bob@remote.test>, relay={relay}, delay=")
    assert line.endswith("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as REMOTE1)")


async def test_4xx_after_data_defers_with_the_remote_text(bus: Bus, run_agent: RunAgent) -> None:
    with Peer(Handler(data_reply="451 4.3.0 try again later")) as peer:
        await run_agent(main, "smtp", FAST)
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (result.status, result.dsn) == ("deferred", "4.3.0")
    assert result.reason == (
        "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 try again later "
        "(in reply to end of DATA command)"
    )


async def test_5xx_at_rcpt_bounces_only_that_recipient(bus: Bus, run_agent: RunAgent) -> None:
    reject = "550 5.1.1 <nobody@remote.test>: Recipient address rejected: User unknown"
    with Peer(Handler(rcpt_replies={"nobody@remote.test": reject})) as peer:
        await run_agent(main, "smtp", FAST)
        job = await bus.submit(
            "smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test", "nobody@remote.test"]
        )
        ok, bad = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (ok.index, ok.status, ok.dsn) == (0, "sent", "2.0.0")
    assert (bad.index, bad.status, bad.dsn) == (1, "bounced", "5.1.1")
    assert bad.reason == f"host 127.0.0.1[127.0.0.1] said: {reject} (in reply to RCPT TO command)"
    assert peer.handler.messages[0][1] == ["bob@remote.test"]


async def test_connection_refused_defers_441(bus: Bus, run_agent: RunAgent) -> None:
    port = free_port()
    await run_agent(main, "smtp", FAST)
    job = await bus.submit("smtp", f"[127.0.0.1]:{port}", ["bob@remote.test"])
    [result] = (await bus.status(job.queue_id)).results
    assert (result.status, result.dsn, result.relay) == ("deferred", "4.4.1", "none")
    assert result.reason == f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"


async def test_timeout_after_data_defers(bus: Bus, run_agent: RunAgent) -> None:
    with Peer(Handler(data_stall=3.0)) as peer:
        await run_agent(main, "smtp", {**FAST, "smtp_data_done_timeout": "1s"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (result.status, result.dsn) == ("deferred", "4.4.2")
    assert result.reason == (
        "conversation with 127.0.0.1[127.0.0.1] timed out while sending end of data "
        "-- message may be sent more than once"
    )


async def test_session_is_reused_for_the_next_job(
    bus: Bus, run_agent: RunAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with Peer() as peer:
        await run_agent(main, "relay", FAST)
        for n in range(3):
            job = await bus.submit("relay", f"[127.0.0.1]:{peer.port}", [f"u{n}@remote.test"])
            assert (await bus.status(job.queue_id)).results[0].status == "sent"
        await run_agent.stop()
    assert len(peer.handler.messages) == 3
    assert len(peer.handler.sessions) == 1
    assert any("conn_use=3" in r.getMessage() for r in caplog.records)


async def test_mx_lookup_and_nxdomain(bus: Bus, run_agent: RunAgent) -> None:
    zone = {
        ("remote.test", "MX"): ["10 mx.remote.test."],
        ("mx.remote.test", "A"): ["127.0.0.1"],
        ("nullmx.test", "MX"): ["0 ."],
    }
    server = await DnsServer(zone, servfail=("broken.test",)).start()
    try:
        with Peer() as peer:
            settings = {**FAST, "postbus_dns_servers": f"127.0.0.1:{server.port}",
                        "smtp_connection_cache_on_demand": "no"}
            await run_agent(main, "smtp", settings)
            sent = await bus.submit("smtp", f"remote.test:{peer.port}", ["bob@remote.test"])
            nx = await bus.submit("smtp", "nowhere.test", ["bob@nowhere.test"])
            soft = await bus.submit("smtp", "broken.test", ["bob@broken.test"])
            null = await bus.submit("smtp", "nullmx.test", ["bob@nullmx.test"])
            [ok] = (await bus.status(sent.queue_id)).results
            [hard] = (await bus.status(nx.queue_id)).results
            [temp] = (await bus.status(soft.queue_id)).results
            [nomail] = (await bus.status(null.queue_id)).results
            await run_agent.stop()
    finally:
        server.close()
    assert (ok.status, ok.relay) == ("sent", f"mx.remote.test[127.0.0.1]:{peer.port}")
    assert (hard.status, hard.dsn, hard.relay) == ("bounced", "5.4.4", "none")
    assert hard.reason == (
        "Host or domain name not found. Name service error for name=nowhere.test type=MX: "
        "Host not found"
    )
    assert (temp.status, temp.dsn) == ("deferred", "4.4.3")
    assert temp.reason.endswith("type=MX: Host not found, try again")
    assert (nomail.status, nomail.dsn) == ("bounced", "5.1.10")


async def test_tls_required_but_not_offered(bus: Bus, run_agent: RunAgent) -> None:
    with Peer() as peer:
        await run_agent(main, "smtp", {**FAST, "smtp_tls_security_level": "encrypt"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (result.status, result.dsn) == ("deferred", "4.7.4")
    assert result.reason == "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"
    assert result.relay == f"127.0.0.1[127.0.0.1]:{peer.port}"


async def test_starttls_when_offered(bus: Bus, run_agent: RunAgent, tmp_path: Path) -> None:
    context = server_tls(tmp_path, need("openssl"))
    with Peer(tls_context=context) as peer:
        await run_agent(main, "smtp", {**FAST, "smtp_tls_security_level": "may"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert result.status == "sent"
    assert peer.handler.tls == [True]


async def test_lmtp_reports_each_recipient(bus: Bus, run_agent: RunAgent) -> None:
    handler = Handler(data_reply="250 2.0.0 <bob> Saved\r\n452 4.2.2 <carol> Mailbox full")
    with Peer(handler, lmtp=True) as peer:
        await run_agent(main, "lmtp", FAST)
        job = await bus.submit(
            "lmtp", f"inet:127.0.0.1:{peer.port}", ["bob@postbus.test", "carol@postbus.test"]
        )
        bob, carol = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (bob.status, bob.reason) == ("sent", "250 2.0.0 <bob> Saved")
    assert (carol.status, carol.dsn) == ("deferred", "4.2.2")
    assert carol.reason == (
        "host 127.0.0.1[127.0.0.1] said: 452 4.2.2 <carol> Mailbox full "
        "(in reply to end of DATA command)"
    )


# -- Postfix's smtp-sink as the remote side -------------------------------------------


@pytest.mark.parametrize(
    ("switches", "status", "dsn", "reason"),
    [
        ([], "sent", "2.0.0", "250 2.0.0 Ok"),
        (["-r", "rcpt"], "deferred", "4.", "(in reply to RCPT TO command)"),
        (["-f", "rcpt"], "bounced", "5.", "(in reply to RCPT TO command)"),
        (["-f", "."], "bounced", "5.", "(in reply to end of DATA command)"),
        (["-r", "mail"], "deferred", "4.", "(in reply to MAIL FROM command)"),
        (["-q", "rcpt"], "deferred", "4.4.2",
         "lost connection with 127.0.0.1[127.0.0.1] while sending RCPT TO"),
        # -w delays the DATA reply; smtp-sink holds back the replies before it too, so
        # with PIPELINING the wait shows on the first reply read (MAIL FROM), as in Postfix.
        (["-p", "-w", "3"], "deferred", "4.4.2",
         "conversation with 127.0.0.1[127.0.0.1] timed out while sending DATA command"),
        (["-w", "3"], "deferred", "4.4.2",
         "conversation with 127.0.0.1[127.0.0.1] timed out while sending MAIL FROM"),
    ],
)
async def test_smtp_sink_failures(
    bus: Bus, run_agent: RunAgent, switches: list[str], status: str, dsn: str, reason: str
) -> None:
    binary = need("smtp-sink")
    settings = {
        **FAST, "smtp_mail_timeout": "1s",
        "smtp_data_init_timeout": "1s", "smtp_data_done_timeout": "1s",
    }
    with SmtpSink(binary, *switches) as sink:
        await run_agent(main, "smtp", settings)
        rcpts = ["a@remote.test", "b@remote.test"]
        job = await bus.submit("smtp", f"[127.0.0.1]:{sink.port}", rcpts)
        results = (await bus.status(job.queue_id)).results
    assert [r.index for r in results] == [0, 1]
    for result in results:
        assert result.status == status, result
        assert result.dsn.startswith(dsn), result
        assert reason in result.reason, result


async def test_smtp_sink_lmtp(bus: Bus, run_agent: RunAgent) -> None:
    binary = need("smtp-sink")
    with SmtpSink(binary, "-L") as sink:
        await run_agent(main, "lmtp", FAST)
        job = await bus.submit("lmtp", f"[127.0.0.1]:{sink.port}", ["a@x.test", "b@x.test"])
        results = (await bus.status(job.queue_id)).results
    assert [r.status for r in results] == ["sent", "sent"]
    assert all(r.reason.startswith("250 2.") for r in results)


# -- as a process, the way `postbus start` runs it --------------------------------------


async def test_runs_as_a_process(
    bus: Bus, nats: ServerProcess, redis: ServerProcess, tmp_path: Path
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"postbus_nats_url = {nats.url}\npostbus_redis_url = {redis.url}/0\n"
        "myhostname = mail.postbus.test\n"
        f"maillog_file = {tmp_path / 'maillog'}\n"
    )
    (conf / "master.cf").write_text(MASTER_CF)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with Peer() as peer, open(tmp_path / "stderr", "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "delivery_smtp", "-c", str(conf), "-n", "relay"],
            env=env, stderr=stderr,
        )
        try:
            job = await bus.submit("relay", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
            [result] = (await bus.status(job.queue_id, timeout=30)).results
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 20)
    assert result.status == "sent"
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()
    log = (tmp_path / "maillog").read_text()
    assert f"postbus/smtp[{proc.pid}]: {job.queue_id}: to=<bob@remote.test>, relay=127.0.0.1" in log
