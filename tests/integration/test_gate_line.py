"""Jobs waiting for a destination's slots in several agents (real Redis, real NATS):
served in the order they came, whichever agent frees the slot; a line that moves
is waited in beyond LOCAL_WAIT, one that stands still is left (parked)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from postbus.maps import context
from postbus.queue.entry import DeliveryJob
from postbus.schedule.gate import LOCAL_WAIT
from postbus.servers import ServerProcess
from tests.integration.gates import close, config, gates
from tests.integration.gates import job as any_job

pytestmark = pytest.mark.integration


def job(queue_id: str) -> DeliveryJob:
    return any_job(queue_id, "line.test")  # this file's own destination


async def test_the_oldest_waiting_job_gets_the_slot_whichever_agent_holds_it(
        tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> None:
    one, two = agents = await gates(nats, redis, config(tmp_path), 2)
    try:
        first, older, newer = job("CCCCCCCCCC1"), job("CCCCCCCCCC2"), job("CCCCCCCCCC3")
        assert await one.admit(first)  # the window's one slot
        waiting_older = asyncio.create_task(two.admit(older))
        await asyncio.sleep(0.3)  # more than OWN_FIRST
        waiting_newer = asyncio.create_task(one.admit(newer))
        await asyncio.sleep(0.1)
        await one.done(first)  # not to the job waiting in the same agent: it came later
        assert await asyncio.wait_for(waiting_older, 10)
        await asyncio.sleep(0.1)
        assert not waiting_newer.done()
        await two.done(older)
        assert await asyncio.wait_for(waiting_newer, 10)
        await one.done(newer)
        assert await context.redis_client().zcard(one.destination(newer).busy) == 0
    finally:
        await close(agents)


async def test_a_moving_line_is_waited_in_a_standing_one_is_left(
        tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> None:
    one, two = agents = await gates(nats, redis, config(tmp_path), 2)
    try:
        jobs = [job(f"DDDDDDDDDD{i}") for i in range(4)]
        assert await one.admit(jobs[0])
        started = time.monotonic()
        waiting = []
        for gate, waiter in ((two, jobs[1]), (one, jobs[2]), (two, jobs[3])):
            waiting.append(asyncio.create_task(gate.admit(waiter)))
            await asyncio.sleep(0.15)  # more than OWN_FIRST: the order is the line's
        # each delivery takes 0.6s: the last job waits about 1.5s, and is not parked
        for index, gate in ((0, one), (1, two), (2, one)):
            await asyncio.sleep(0.6 if index else 0.15)
            await gate.done(jobs[index])
            assert await asyncio.wait_for(waiting[index], 10), "parked in a moving line"
        assert time.monotonic() - started > LOCAL_WAIT
        # nothing is freed now: a job that comes waits LOCAL_WAIT, then is parked
        late = job("DDDDDDDDDD9")
        started = time.monotonic()
        assert not await one.admit(late)
        assert LOCAL_WAIT <= time.monotonic() - started < 4 * LOCAL_WAIT
        dest = one.destination(late)
        parked = await one.work.first_parked(dest.transport, dest.key)
        assert parked is not None and parked[1].queue_id == late.queue_id
        await two.done(jobs[3])
    finally:
        await close(agents)
