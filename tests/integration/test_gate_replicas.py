"""Two delivery agents' gates sharing one destination window (real Redis, real
NATS): a slot one agent frees goes to a job waiting in the other, at once,
instead of that job being parked when its local wait runs out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from postbus.maps import context
from postbus.schedule.gate import LOCAL_WAIT
from postbus.servers import ServerProcess
from tests.integration.gates import close, config, gates, job

pytestmark = pytest.mark.integration


async def test_a_slot_freed_in_one_agent_wakes_a_job_waiting_in_another(
        tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> None:
    agents = await gates(nats, redis, config(tmp_path), 2)
    clients = [gate.work.nc for gate in agents]
    try:
        first, second = job("AAAAAAAAAA1"), job("AAAAAAAAAA2")
        assert await agents[0].admit(first)  # the window's one slot
        started = time.monotonic()
        waiting = asyncio.create_task(agents[1].admit(second))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await agents[0].done(first)  # freed in agent 0: agent 1 hears of it
        assert await asyncio.wait_for(waiting, 10), "parked instead of admitted"
        assert time.monotonic() - started < LOCAL_WAIT, "admitted only by its own retry"
        await agents[1].done(second)
        # one agent alone announces nothing: its own waiters take its slots
        heard: list[bytes] = []

        async def record(msg) -> None:  # type: ignore[no-untyped-def]
            heard.append(msg.data)

        await clients[1].subscribe("postbus.slot.>", cb=record)
        await clients[1].flush()
        await asyncio.sleep(1.6)  # agent 1's wait is no longer "wanted"
        third, fourth = job("AAAAAAAAAA3"), job("AAAAAAAAAA4")
        assert await agents[0].admit(third)
        waiting = asyncio.create_task(agents[0].admit(fourth))
        await asyncio.sleep(0.2)
        await agents[0].done(third)
        assert await asyncio.wait_for(waiting, 10)
        await agents[0].done(fourth)
        await clients[0].flush()
        await clients[1].flush()
        await asyncio.sleep(0.2)
        assert heard == []
    finally:
        await close(agents)


async def script_calls() -> int:
    """Lua script calls Redis has answered so far (EVALSHA and EVAL)."""
    stats = await context.redis_client().info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
               for name in ("evalsha", "eval", "script|load"))


async def test_a_slot_freed_goes_to_the_job_waiting_in_the_same_agent_in_one_call(
        tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> None:
    agents = await gates(nats, redis, config(tmp_path), 1)
    gate = agents[0]
    try:
        jobs = [job(f"BBBBBBBBBB{i}") for i in range(4)]
        assert await gate.admit(jobs[0])  # the window's one slot
        waiting = [asyncio.create_task(gate.admit(j)) for j in jobs[1:]]
        await asyncio.sleep(0.2)
        assert not any(task.done() for task in waiting)
        await gate.done(jobs[0])  # the first hand-over loads the script
        assert await asyncio.wait_for(waiting[0], 10)
        before = await script_calls()
        await gate.done(jobs[1])
        assert await asyncio.wait_for(waiting[1], 10), "parked instead of admitted"
        # one call freed the slot and gave it to the next job, which asked nothing more
        assert await script_calls() - before == 1
        assert not waiting[2].done()  # the window still has one slot
        await gate.done(jobs[2])
        assert await asyncio.wait_for(waiting[2], 10)
        await gate.done(jobs[3])
        busy = await context.redis_client().zcard(
            gate.destination(jobs[3]).busy)
        assert busy == 0  # every slot given back
    finally:
        await close(agents)


async def test_a_job_whose_local_wait_runs_out_is_parked(
        tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> None:
    agents = await gates(nats, redis, config(tmp_path), 1)
    gate = agents[0]
    work = gate.work
    try:
        first, second = job("CCCCCCCCCC1"), job("CCCCCCCCCC2")
        assert await gate.admit(first)  # the window's one slot, kept
        started = time.monotonic()
        assert not await asyncio.wait_for(gate.admit(second), 10)  # parked
        assert time.monotonic() - started >= LOCAL_WAIT * 0.9
        dest = gate.destination(second)
        parked = await work.first_parked("smtp", dest.key)
        assert parked is not None and parked[1].queue_id == "CCCCCCCCCC2"
        assert gate._waiters == {}  # nobody is left waiting here
    finally:
        await close(agents)
