"""The policy service's checks against a real redis-server, with an injected clock:
postgrey's greylisting, sliding-window rate limits, their composition, a Redis outage."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from policy.checks import Checks
from policy.greylist import client_network, sender_key
from policy.ratelimit import parse_limits
from policy.store import Store
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.servers import ServerProcess, free_port, redis_server

HELP = "Greylisted, see http://postgrey.schweikert.ch/help/example.net.html"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def req(**kw: str) -> dict[str, str]:
    base = {"request": "smtpd_access_policy", "protocol_state": "RCPT",
            "client_address": "192.0.2.10", "client_name": "mx.example.org",
            "sender": "alice@example.org", "recipient": "bob@example.net",
            "etrn_domain": "", "instance": "1.2.3"}
    return base | kw


@pytest.fixture
async def client(redis: ServerProcess) -> AsyncIterator[Redis]:
    r = Redis.from_url(f"{redis.url}/0")
    yield r
    await r.aclose()


def make(client: Redis, clock: Clock, text: str) -> Checks:
    cfg = Config.from_text("myhostname = mx.postbus.test\n" + text)
    return Checks(cfg, Store(lambda: client), clock=clock)


def test_postgrey_substitutions() -> None:
    assert sender_key("list+bounce-123-4@lists.example") == "list@lists.example"
    assert sender_key("news-2024-77@example.com") == "news-#-#@example.com"
    assert sender_key("prvs=1234567890=user@example.com") == "user@example.com"
    assert sender_key("prvs=user=1234567890@example.com") == "user@example.com"
    assert sender_key("") == ""
    assert client_network("192.0.2.77", 24, 64) == "192.0.2.0"
    assert client_network("2001:db8:1:2:3::9", 24, 64) == "2001:db8:1:2::"
    assert client_network("192.0.2.77", 32, 128) == "192.0.2.77"
    assert client_network("unknown", 24, 64) == "unknown"


async def test_greylist_defers_then_passes_with_a_header(client: Redis) -> None:
    clock = Clock()
    checks = make(client, clock, "postbus_policy_checks = greylist\n")
    first = "DEFER_IF_PERMIT 4.2.0 " + HELP
    assert await checks.answer(req()) == first
    clock.now += 299
    assert await checks.answer(req()) == first  # early retry
    # a neighbour in the same /24, a VERP variant of the sender: the same triplet
    clock.now += 1
    answer = await checks.answer(req(client_address="192.0.2.99", sender="alice+x@example.org",
                                     instance="4.5.6"))
    assert answer.startswith("PREPEND X-Greylist: delayed 300 seconds by postbus-0.1.0 at "
                             "mx.postbus.test; ")
    assert await checks.answer(req(instance="7.8.9")) == "DUNNO"  # passed already: no header
    # another recipient is another triplet
    assert await checks.answer(req(recipient="carol@example.net")) == first.replace(
        "example.net", "example.net")
    # without etrn_domain (not Postfix), no 4.2.0, and %s is the seconds left
    checks = make(client, clock, "postbus_policy_checks = greylist\n"
                  "postbus_policy_greylist_text = wait %s seconds for %r\n")
    r = req(recipient="dave@example.com")
    del r["etrn_domain"]
    assert await checks.answer(r) == "DEFER_IF_PERMIT wait 300 seconds for example.com"


async def test_greylist_retry_window_and_max_age(client: Redis) -> None:
    clock = Clock()
    checks = make(client, clock, "postbus_policy_checks = greylist\n"
                  "postbus_policy_greylist_retry_window = 1h\n")
    assert (await checks.answer(req())).startswith("DEFER_IF_PERMIT")
    clock.now += 3601  # the first retry comes too late: it starts over
    assert (await checks.answer(req())).startswith("DEFER_IF_PERMIT 4.2.0")
    clock.now += 300
    assert (await checks.answer(req())).startswith("PREPEND X-Greylist: delayed 300 seconds")
    keys = [k async for k in client.scan_iter("postbus:policy:grey:*")]
    assert len(keys) == 1
    assert 35 * 86400 - 5 <= await client.ttl(keys[0]) <= 35 * 86400  # passed: kept max_age


async def test_auto_whitelisting_of_clients(client: Redis, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    caplog.set_level(logging.INFO, "postbus.policy")
    clock = Clock()
    checks = make(client, clock, "postbus_policy_checks = greylist\n"
                  "postbus_policy_greylist_auto_whitelist_clients = 2\n")
    for n in range(2):  # two triplets pass, an hour apart
        r = req(recipient=f"u{n}@example.net", instance=str(n))
        assert (await checks.answer(r)).startswith("DEFER_IF_PERMIT")
        clock.now += 300
        assert (await checks.answer(r)).startswith("PREPEND X-Greylist")
        clock.now += 3600
    assert "whitelisted: mx.example.org[192.0.2.10]" in caplog.text
    assert await checks.answer(req(recipient="new@example.net")) == "DUNNO"
    assert "action=pass, reason=client AWL" in caplog.text
    # the AWL is per address, not per network
    assert (await checks.answer(req(client_address="192.0.2.11",
                                    recipient="new@example.net"))).startswith("DEFER_IF")


async def test_whitelists(client: Redis) -> None:
    checks = make(client, Clock(), "postbus_policy_checks = greylist\n"
                  "postbus_policy_greylist_whitelist_clients = 198.51.100.0/24, "
                  "trusted.example, /^mail[0-9]+\\.corp\\.example$$/\n"
                  "postbus_policy_greylist_whitelist_recipients = postmaster@, "
                  "abuse@example.net, open.example\n")
    assert await checks.answer(req(client_address="198.51.100.7")) == "DUNNO"
    assert await checks.answer(req(client_name="out.trusted.example")) == "DUNNO"
    assert await checks.answer(req(client_name="mail12.corp.example")) == "DUNNO"
    assert await checks.answer(req(recipient="postmaster@any.example")) == "DUNNO"
    assert await checks.answer(req(recipient="abuse+x@example.net")) == "DUNNO"
    assert await checks.answer(req(recipient="x@mx.open.example")) == "DUNNO"
    assert (await checks.answer(req(client_name="nottrusted.example"))).startswith("DEFER")
    assert (await checks.answer(req(recipient="abuse@example.org"))).startswith("DEFER")
    assert await client.dbsize() == 2  # whitelisted requests wrote nothing


def test_rate_limit_specs() -> None:
    limits = parse_limits(["sender", "100/1h", "recipient_domain", "5/30s"])
    assert [(x.attribute, x.count, x.window) for x in limits] == [
        ("sender", 100, 3600.0), ("recipient_domain", 5, 30.0)]
    for bad in (["sender"], ["helo", "1/1s"], ["sender", "x/1h"], ["sender", "5"],
                ["sender", "0/1h"], ["sender", "5/1y"]):
        with pytest.raises(ConfigError):
            parse_limits(bad)


async def test_rate_limits_slide(client: Redis) -> None:
    clock = Clock()
    checks = make(client, clock, "postbus_policy_checks = ratelimit\n"
                  "postbus_policy_ratelimit_limits = sender 3/1m, client_address 5/1h\n")
    for _ in range(3):
        assert await checks.answer(req()) == "DUNNO"
        clock.now += 10
    over = ("DEFER_IF_PERMIT 4.7.1 Rate limit exceeded for sender alice@example.org: "
            "more than 3 per 1m")
    assert await checks.answer(req()) == over
    assert await checks.answer(req(sender="ALICE@example.org")) == over  # case-insensitive
    clock.now += 31  # the first one left the window: one more fits
    assert await checks.answer(req()) == "DUNNO"
    assert await checks.answer(req()) == over
    # other senders from the same client: the client limit (5) is next
    assert await checks.answer(req(sender="x@example.org")) == "DUNNO"
    assert await checks.answer(req(sender="y@example.org")) == \
        "DEFER_IF_PERMIT 4.7.1 Rate limit exceeded for client_address 192.0.2.10: " \
        "more than 5 per 1h"
    # other states are not counted; a null sender counts only against the client
    assert await checks.answer(req(protocol_state="DATA")) == "DUNNO"


async def test_rate_limit_reply_text_and_recipient_domain(client: Redis) -> None:
    checks = make(client, Clock(), "postbus_policy_checks = ratelimit\n"
                  "postbus_policy_ratelimit_limits = recipient_domain 1/1d, sasl_username 9/1d\n"
                  "postbus_policy_ratelimit_action = 452\n"
                  "postbus_policy_ratelimit_text = 4.5.3 too many to %v (%l/%w)\n")
    assert await checks.answer(req(recipient="a@Big.Example")) == "DUNNO"
    assert await checks.answer(req(recipient="b@big.example")) == \
        "452 4.5.3 too many to big.example (1/1d)"


async def test_composition_first_decisive_action_wins(client: Redis) -> None:
    clock = Clock()
    checks = make(client, clock, "postbus_policy_checks = ratelimit, greylist\n"
                  "postbus_policy_ratelimit_limits = sender 1/1h\n")
    assert (await checks.answer(req())).startswith("DEFER_IF_PERMIT 4.2.0 Greylisted")
    clock.now += 300
    # the rate limit comes first and decides: greylisting is not asked
    assert (await checks.answer(req())).startswith("DEFER_IF_PERMIT 4.7.1 Rate limit")


async def test_redis_outage_gives_the_default_action_logged_once(
    caplog: pytest.LogCaptureFixture
) -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        cfg = Config.from_text("postbus_policy_checks = greylist, ratelimit\n"
                               "postbus_policy_ratelimit_limits = sender 1/1h\n"
                               "postbus_policy_default_action = DEFER_IF_PERMIT try later\n")
        store = Store(lambda: dead, retry_after=0.0)  # ask Redis every time: still one line
        checks = Checks(cfg, store, clock=Clock())
        for _ in range(5):
            assert await checks.answer(req()) == "DEFER_IF_PERMIT try later"
        lines = [r.getMessage() for r in caplog.records if "problem talking to Redis" in
                 r.getMessage()]
        assert len(lines) == 1
        assert lines[0].startswith("warning: problem talking to Redis: ")
    finally:
        await dead.aclose()


def test_unknown_check_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown check 'postgrey'"):
        Checks(Config.from_text("postbus_policy_checks = postgrey\n"))


async def test_odd_values_are_answered(client: Redis) -> None:
    """Non-UTF-8 bytes (already U+FFFD), an unparsable address, missing attributes."""
    clock = Clock()
    checks = make(client, clock, "postbus_policy_checks = greylist, ratelimit\n"
                  "postbus_policy_ratelimit_limits = client_address 1/1m\n")
    odd = req(client_address="not-an-ip", sender="\ufffdl\ufffdve@exa\ufffdmple.com",
              recipient="\ufffd@\ufffd")
    assert await checks.answer(odd) == (
        "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/\ufffd.html")
    partial = req()
    del partial["sender"]
    assert await checks.answer(partial) == "DUNNO"  # as postgrey: attribute missing


async def test_redis_back_is_logged_and_checks_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.policy")
    port = free_port()
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    checks = Checks(Config.from_text("postbus_policy_checks = greylist\n"),
                    Store(lambda: client, retry_after=0.0), clock=Clock())
    server = None
    try:
        assert await checks.answer(req()) == "DUNNO"  # the default action
        server = redis_server(tmp_path / "redis", port=port).start()
        assert (await checks.answer(req())).startswith("DEFER_IF_PERMIT 4.2.0 Greylisted")
        messages = [r.getMessage() for r in caplog.records]
        assert sum("problem talking to Redis" in m for m in messages) == 1
        assert "Redis answers again; policy checks resumed" in messages
    finally:
        await client.aclose()
        if server is not None:
            server.stop()
