"""Our ingress-smtpd with check_policy_service pointing at our policy service (real
processes, real Redis): greylisting shared by two replicas, a rate limit, SPF against a
loopback DNS server, a Redis that dies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from postbus.servers import ServerProcess, redis_server
from tests.integration.delivery.peers import DnsServer
from tests.integration.ingress.conftest import Running, StartSmtpd
from tests.integration.policy.policy_process import PolicyProcess, start_policy

pytestmark = pytest.mark.integration

GREY = ("450 4.2.0 <user@postbus.test>: Recipient address rejected: Greylisted, "
        "see http://postgrey.schweikert.ch/help/postbus.test.html")


@pytest.fixture
def policies(tmp_path: Path) -> Iterator[list[PolicyProcess]]:
    started: list[PolicyProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.stop()


def restrictions(*ports: int) -> dict[str, str]:
    checks = ", ".join(f"check_policy_service inet:127.0.0.1:{p}" for p in ports)
    return {"mynetworks": "127.0.0.0/8",
            "smtpd_recipient_restrictions": f"{checks}, permit_mynetworks, reject"}


async def rcpt(run: Running, *rcpts: str, sender: str = "s@example.org",
               helo: str = "client.example") -> list[str]:
    client = await run.client()
    await client.cmd(f"EHLO {helo}")
    await client.cmd(f"MAIL FROM:<{sender}>")
    replies = [await client.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    await client.cmd("QUIT")
    await client.close()
    return replies


async def test_greylisting_shared_by_two_replicas(
    smtpd: StartSmtpd, redis: ServerProcess, tmp_path: Path, policies: list[PolicyProcess]
) -> None:
    main_cf = (f"postbus_redis_url = {redis.url}/0\npostbus_policy_checks = greylist\n"
               "postbus_policy_greylist_delay = 2s\n")
    a = start_policy(tmp_path, main_cf, "a")
    b = start_policy(tmp_path, main_cf, "b")
    policies += [a, b]
    run_a = await smtpd(**restrictions(a.port))
    run_b = await smtpd(**restrictions(b.port))
    started = time.monotonic()
    assert await rcpt(run_a, "user@postbus.test") == [GREY]
    a.wait_log("action=greylist, reason=new, client_name=")
    # the retry, after the delay, reaches the other replica: it knows the triplet and
    # lets it pass at once (a replica of its own would greylist it as new)
    await asyncio.sleep(max(0.0, started + 3.1 - time.monotonic()))  # the delay must pass
    assert await rcpt(run_b, "user@postbus.test") == ["250 2.1.5 Ok"]
    assert "action=greylist" not in b.output()
    b.wait_log("action=pass, reason=triplet found, delay=")
    metrics = httpx.get(f"http://127.0.0.1:{b.metrics}/metrics").text  # type: ignore[attr-defined]
    assert 'postbus_policy_actions_total{action="PREPEND",check="greylist"} 1.0' in metrics


async def test_rate_limit_reply(
    smtpd: StartSmtpd, redis: ServerProcess, tmp_path: Path, policies: list[PolicyProcess]
) -> None:
    p = start_policy(tmp_path, f"postbus_redis_url = {redis.url}/0\n"
                     "postbus_policy_checks = ratelimit\n"
                     "postbus_policy_ratelimit_limits = sender 2/1h\n")
    policies.append(p)
    run = await smtpd(**restrictions(p.port))
    assert await rcpt(run, "a@postbus.test", "b@postbus.test", "c@postbus.test") == [
        "250 2.1.5 Ok", "250 2.1.5 Ok",
        "450 4.7.1 <c@postbus.test>: Recipient address rejected: Rate limit exceeded for "
        "sender s@example.org: more than 2 per 1h"]


async def test_spf_pass_fail_softfail(
    smtpd: StartSmtpd, redis: ServerProcess, tmp_path: Path, policies: list[PolicyProcess]
) -> None:
    dns = await DnsServer({("ok.test", "TXT"): ['"v=spf1 ip4:127.0.0.0/8 -all"'],
                           ("bad.test", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"'],
                           ("soft.test", "TXT"): ['"v=spf1 ~all"']}).start()
    try:
        p = start_policy(tmp_path, f"postbus_redis_url = {redis.url}/0\n"
                         f"postbus_dns_servers = 127.0.0.1:{dns.port}\n"
                         "postbus_policy_checks = spf\npostbus_policy_spf_skip_addresses =\n")
        policies.append(p)
        run = await smtpd(**restrictions(p.port))
        assert await rcpt(run, "u@postbus.test", sender="a@ok.test") == ["250 2.1.5 Ok"]
        assert await rcpt(run, "u@postbus.test", sender="a@soft.test") == ["250 2.1.5 Ok"]
        assert await rcpt(run, "u@postbus.test", sender="a@bad.test") == [
            "550 5.7.23 <u@postbus.test>: Recipient address rejected: Message rejected due "
            "to: SPF fail - not authorized. Please see http://www.openspf.net/Why?s=mfrom;"
            "id=a@bad.test;ip=127.0.0.1;r=postbus.test"]
    finally:
        dns.close()


async def test_redis_killed_gives_the_default_action_logged_once(
    smtpd: StartSmtpd, tmp_path: Path, policies: list[PolicyProcess]
) -> None:
    redis = redis_server(tmp_path / "redis").start()
    try:
        p = start_policy(tmp_path, f"postbus_redis_url = {redis.url}/0\n"
                         "postbus_policy_checks = greylist\n"
                         "postbus_policy_default_action = DEFER_IF_PERMIT 4.3.0 try again\n")
        policies.append(p)
        run = await smtpd(**restrictions(p.port))
        assert await rcpt(run, "user@postbus.test") == [GREY]
        redis.stop(sig_kill=True)
        deferred = ("450 4.3.0 <user@postbus.test>: Recipient address rejected: try again")
        for _ in range(4):
            assert await rcpt(run, "user@postbus.test") == [deferred]
        p.wait_log("warning: problem talking to Redis: ")
        assert p.output().count("problem talking to Redis") == 1
    finally:
        redis.stop()
