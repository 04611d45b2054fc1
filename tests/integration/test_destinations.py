"""The destination windows against a real redis-server: Postfix's concurrency
window, feedback, dead destinations and rate delays (SCHEDULER_README)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postbus.config.loader import Config
from postbus.maps import context
from postbus.schedule.windows import (
    Destination,
    Feedback,
    Limits,
    Windows,
    destination_name,
)
from postbus.servers import ServerProcess

pytestmark = pytest.mark.integration


def config(tmp_path: Path, main_cf: str = "") -> Config:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(main_cf)
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n")
    return Config.load(conf)


@pytest.fixture
async def windows(tmp_path: Path, redis: ServerProcess) -> AsyncIterator[Windows]:
    context.configure(f"{redis.url}/0")
    yield Windows(config(tmp_path, "minimal_backoff_time = 2s\n"), lease=20.0)
    await context.aclose()


DEST = Destination("smtp", "mx.example.test")


async def take(windows: Windows, n: int, prefix: str = "Q") -> list[str]:
    """Ask for n slots; the verdicts."""
    return [(await windows.acquire(DEST, f"{prefix}{i} a.0")).verdict for i in range(n)]


def test_feedback_values_as_postfix_reads_them() -> None:
    assert Feedback.parse("1") == Feedback(1.0, False)
    assert Feedback.parse("1/concurrency") == Feedback(1.0, True)
    assert Feedback.parse("1/8") == Feedback(0.125, False)
    assert Feedback.parse("0.5") == Feedback(0.5, False)
    # malformed or unreasonable: Postfix warns and uses 1
    assert Feedback.parse("1/sqrt_concurrency") == Feedback(1.0, False)
    assert Feedback.parse("3") == Feedback(1.0, False)
    assert Feedback.parse("fast") == Feedback(1.0, False)


def test_limits_follow_transport_names_and_defaults(tmp_path: Path) -> None:
    cfg = config(tmp_path, "default_destination_concurrency_limit = 7\n"
                           "relay_destination_concurrency_limit = 3\n"
                           "relay_destination_rate_delay = 2s\n"
                           "initial_destination_concurrency = 2\n")
    smtp, relay, local = (Limits.of(cfg, t) for t in ("smtp", "relay", "local"))
    assert (smtp.initial, smtp.limit, smtp.recipient_limit) == (2, 7, 50)
    assert (relay.limit, relay.rate_delay) == (3, 2.0)
    assert (local.limit, local.recipient_limit) == (2, 1)  # Postfix's local defaults


def test_one_recipient_transports_queue_per_recipient(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    local, smtp = Limits.of(cfg, "local"), Limits.of(cfg, "smtp")
    # as qmgr_message_resolve(): localpart without extension @ nexthop, lower case
    assert destination_name(local, "local", "Mail.Example", "Bob+news@example", "+") == (
        "bob@mail.example")
    assert destination_name(smtp, "smtp", "MX.Example.test", "Bob@x", "+") == "mx.example.test"


async def test_window_starts_at_initial_concurrency(windows: Windows) -> None:
    assert await take(windows, 6) == ["go"] * 5 + ["wait"]
    # the same job asking again keeps its one slot
    assert (await windows.acquire(DEST, "Q0 a.0")).verdict == "go"
    assert (await windows.acquire(DEST, "Q5 a.0")).verdict == "wait"


async def test_positive_feedback_opens_the_window_up_to_the_limit(windows: Windows) -> None:
    # window 5, feedback 1: each success adds one while window < busy + initial
    await take(windows, 5)
    freed = await windows.release(DEST, "Q0 a.0")
    assert freed.held and freed.dead is None
    assert await take(windows, 3, "R") == ["go", "go", "wait"]  # window 6, 4 + 2 busy
    state = await context.redis_client().hgetall(DEST.state)
    assert float(state[b"window"]) == 6
    # a second release of the same slot gives no feedback
    assert not (await windows.release(DEST, "Q0 a.0")).held
    # under steady load (take slots until told to wait, free the oldest) the
    # window grows one per success up to the limit (20), never past it
    held = ["Q1 a.0", "Q2 a.0", "Q3 a.0", "Q4 a.0", "R0 a.0", "R1 a.0"]
    for i in range(200):
        member = f"S{i} a.0"
        if (await windows.acquire(DEST, member)).verdict == "go":
            held.append(member)
        else:
            await windows.release(DEST, held.pop(0))
        assert len(held) <= 20
    assert float((await context.redis_client().hget(DEST.state, "window")) or 0) == 20
    assert len(held) == 20


async def test_failed_cohorts_mark_the_destination_dead_then_it_revives(
    windows: Windows,
) -> None:
    await take(windows, 5)
    reason = "connect to mx.example.test[192.0.2.1]:25: Connection refused"
    # as qmgr_queue_throttle(): window 5 -> 3 (the first negative step also
    # undoes the hysteresis) -> 2; cohorts 1/5 + 1/3 + 1/2 reach the limit of 1
    for i, window in ((0, 3), (1, 2)):
        freed = await windows.release(DEST, f"Q{i} a.0", "4.4.1", reason)
        assert freed.held and freed.dead is None
        assert float(await context.redis_client().hget(DEST.state, "window") or 0) == window
    freed = await windows.release(DEST, "Q2 a.0", "4.4.1", reason)
    assert freed.dead is not None
    assert freed.dead.reason == f"delivery temporarily suspended: {reason}"
    assert freed.dead.dsn == "4.4.1"
    grant = await windows.acquire(DEST, "N1 a.0")
    assert grant.verdict == "dead" and grant.reason == freed.dead.reason
    # after minimal_backoff_time (2s here) it comes back with a window of what
    # is still busy (Q3, Q4), as qmgr_queue_unthrottle()
    deadline = asyncio.get_running_loop().time() + 10
    while (await windows.acquire(DEST, "N1 a.0")).verdict == "dead":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    assert float((await context.redis_client().hget(DEST.state, "window")) or 0) == 2


async def test_a_success_ends_the_failure_run(windows: Windows) -> None:
    await take(windows, 5)
    await windows.release(DEST, "Q0 a.0", "4.4.2", "lost connection")  # cohorts 0.2
    await windows.release(DEST, "Q1 a.0")  # positive: fail_cohorts back to 0
    # 1/3 + 1/2 < 1: without the success in between, the third failure killed it
    for i in (2, 3):
        assert (await windows.release(DEST, f"Q{i} a.0", "4.4.2", "lost")).dead is None


async def test_rate_delay_allows_one_delivery_at_a_time_spaced_out(
    tmp_path: Path, redis: ServerProcess
) -> None:
    context.configure(f"{redis.url}/0")
    slow = Windows(config(tmp_path, "smtp_destination_rate_delay = 1s\n"), lease=20.0)
    try:
        assert (await slow.acquire(DEST, "A a.0")).verdict == "go"
        assert (await slow.acquire(DEST, "B a.0")).verdict == "wait"  # concurrency 1
        await slow.release(DEST, "A a.0")
        grant = await slow.acquire(DEST, "B a.0")
        assert grant.verdict == "wait" and grant.after > 0  # not before the delay
        deadline = asyncio.get_running_loop().time() + 10
        while (await slow.acquire(DEST, "B a.0")).verdict != "go":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        await context.aclose()


async def test_expired_slots_are_handed_back_for_checking(
    tmp_path: Path, redis: ServerProcess
) -> None:
    context.configure(f"{redis.url}/0")
    short = Windows(config(tmp_path), lease=0.2)
    try:
        await short.acquire(DEST, "Q1 a.0")
        await short.acquire(DEST, "Q2 a.0")
        deadline = asyncio.get_running_loop().time() + 10
        while len(expired := await short.expired()) < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert {m for _, m in expired} == {"Q1 a.0", "Q2 a.0"}
        assert all(d == DEST for d, _ in expired)
        assert await short.renew(DEST, "Q1 a.0")  # still running: kept
        await short.forget(DEST, "Q2 a.0")  # gone: freed, without feedback
        assert await context.redis_client().zrange(DEST.busy, 0, -1) == [b"Q1 a.0"]
        assert not await short.renew(DEST, "Q2 a.0")
    finally:
        await context.aclose()
