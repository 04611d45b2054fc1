"""MTA-STS in the smtp agent against real peers on loopback: a DNS server with the
_mta-sts record, an HTTPS policy server and an aiosmtpd MX with STARTTLS, all with
certificates from a test CA; the policy cache and the TLS-RPT counters in a real Redis.
(The reports built from those counters: test_tlsrpt.py.)"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from delivery_smtp.__main__ import main
from postbus.maps.context import redis_client
from postbus.tlsrpt.store import day_entries, day_of
from tests.tls_certs import Pki

from .conftest import Bus, RunAgent
from .peers import Peer
from .sts_peers import (
    PolicyServer,
    Remote,
    https_context,
    mx_peer,
    policy_text,
    remote_peers,
    set_txt,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[Remote]:
    async with remote_peers(tmp_path) as made:
        yield made


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
    bus: Bus, run_agent: RunAgent, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    remote.https.policy = policy_text("enforce", "*.other.test", "mx.remote.example")
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings())
        got = await _send(bus, peer)
        await run_agent.stop()
    why = ("MTA-STS policy of remote.test (id=1, mode enforce) allows none of its MX hosts: "
           "mx.remote.test")
    assert got == ("deferred", "4.7.5", why)
    assert peer.handler.messages == []
    [line] = _lines(caplog, "status=deferred")
    assert ": to=<bob@remote.test>, relay=none, delay=" in line
    assert line.endswith(f", dsn=4.7.5, status=deferred ({why})")


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


async def test_mode_none_replaces_the_cached_policy(
    bus: Bus, run_agent: RunAgent, remote: Remote
) -> None:
    remote.https.policy = policy_text("enforce", "mx.elsewhere.test")
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings())
        first = await _send(bus, peer)
        remote.https.policy = policy_text("none", max_age=60)
        set_txt(remote.dns, "_mta-sts.remote.test", "v=STSv1; id=2")
        second = await _send(bus, peer)
        await run_agent.stop()
    assert first[:2] == ("deferred", "4.7.5")
    assert second[0] == "sent"
    assert peer.handler.tls == [False]  # smtp_tls_security_level is none again
    assert json.loads(await redis_client().get("postbus:mta-sts:remote.test"))["mode"] == "none"


async def test_concurrent_deliveries_share_one_policy_fetch(
    bus: Bus, run_agent: RunAgent, remote: Remote
) -> None:
    with mx_peer(remote.pki) as peer:
        await run_agent(main, "smtp", remote.settings(
            postbus_mta_sts_cache_refresh="1h", smtp_connection_cache_on_demand="yes"))
        jobs = [await bus.submit("smtp", f"remote.test:{peer.port}", [f"u{n}@remote.test"])
                for n in range(4)]
        results = [(await bus.status(job.queue_id)).results[0].status for job in jobs]
        await run_agent.stop()
    assert results == ["sent"] * 4
    assert remote.https.requests == ["GET /.well-known/mta-sts.txt HTTP/1.1"]


async def test_a_policy_over_64_kib_or_too_slow_is_no_policy(
    bus: Bus, run_agent: RunAgent, remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    remote.https.policy = policy_text("enforce", "mx.elsewhere.test") + "x: y\r\n" * 11000
    with Peer() as peer:
        await run_agent(main, "smtp", remote.settings(postbus_mta_sts_timeout="1s"))
        big = await _send(bus, peer)
        remote.https.stalling = True
        set_txt(remote.dns, "_mta-sts.remote.test", "v=STSv1; id=2")
        slow = await _send(bus, peer)
        await run_agent.stop()
    assert (big[0], slow[0]) == ("sent", "sent")
    where = f"https://mta-sts.remote.test/.well-known/mta-sts.txt (port {remote.https.port})"
    assert _lines(caplog, "fetch for") == [
        f"MTA-STS policy fetch for remote.test (id=1) failed: {where}: larger than 64 KiB",
        "MTA-STS policy fetch for remote.test (id=2) failed: mta-sts.remote.test: timed out"]
    assert sorted(await _report()) == [(0, [("sts-policy-fetch-error", "")]),
                                       (0, [("sts-policy-invalid", "")])]
