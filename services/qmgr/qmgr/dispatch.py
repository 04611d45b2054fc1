"""Handing jobs to the delivery agents through the destination windows
(≈ qmgr_job.c's entry selection, qmgr_deliver.c, qmgr_defer.c).

A job goes to its agents only when its destination has a free slot
(:mod:`qmgr.destinations`); otherwise it is parked on
``postbus.wait.<transport>.<destination key>.<qid>`` (in the work stream,
so every qmgr replica sees it, and ``in_flight`` keeps its attempt alive).
When a result frees a slot, the qmgr that records it moves the oldest
parked job of that destination on. A destination that died has its parked
jobs, and every new one, deferred at once with Postfix's words
("delivery temporarily suspended: ..."), without a connection.

Every second each qmgr also sweeps: slots whose lease ran out are kept
while their job is still on the bus and freed otherwise (an agent and a
qmgr died), and destinations with parked jobs and room (a rate delay
passed, a dead destination came back, a release was lost) move on. A
parked job is moved at most once per slot: the slot is named after the
job, and the job's idempotency key makes a second publish a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from postbus.delivery import Stats, log_delivery, status_of
from postbus.queue.entry import DeliveryJob, DeliveryStatus, RcptResult
from postbus.service import ServiceContext
from qmgr.destinations import Destination, Grant, Windows

log = logging.getLogger("postbus.qmgr")

SWEEP_INTERVAL = 1.0  # seconds between sweeps


class Dispatcher:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.windows = Windows(ctx.cfg, ctx.cfg.time("postbus_delivery_lease"))
        self._timers: set[asyncio.Task[None]] = set()
        ctx.on_reload(self.reconfigure)

    def reconfigure(self, cfg: object) -> None:
        self.windows = Windows(self.ctx.cfg, self.ctx.cfg.time("postbus_delivery_lease"))

    async def hand_out(self, jobs: list[DeliveryJob]) -> None:
        for job in jobs:
            await self.offer(job)

    async def offer(self, job: DeliveryJob) -> None:
        """Deliver now, park, or defer (dead destination) one job."""
        dest = Destination(job.transport, job.destination)
        grant = await self.windows.acquire(dest, job.key)
        if grant.verdict == "go":
            await self.ctx.work.submit_job(job)
        elif grant.verdict == "dead":
            await self.suspend(job, grant)
        else:
            await self.ctx.work.park_job(job, dest.key)
            await self.windows.mark_waiting(dest)  # after parking: see promote()
            self._wake_at(dest, grant.after)

    async def released(self, status: DeliveryStatus) -> None:
        """A job's result came in: free its slot (feedback), move parked jobs on."""
        if not status.job:
            return  # not handed out through a window (a release before scheduling)
        dest = Destination(status.transport, status.destination)
        freed = await self.windows.release(dest, status.job, status.hop_dsn, status.hop_reason)
        if not freed.held:
            return
        if freed.dead is not None:
            log.info("%s: %s", dest.name or dest.transport, freed.dead.reason)
            if freed.waiting:
                await self.defer_parked(dest, freed.dead)
        elif freed.waiting:
            await self.promote(dest)

    async def promote(self, dest: Destination) -> None:
        """Move parked jobs of ``dest`` on while its window has room."""
        work = self.ctx.work
        while True:
            got = await work.first_parked(dest.transport, dest.key)
            if got is None:
                # Forget the destination, then look again: a job parked in between
                # marks it again after parking, so it cannot be missed.
                await self.windows.unmark_waiting(dest)
                if await work.first_parked(dest.transport, dest.key) is not None:
                    await self.windows.mark_waiting(dest)
                return
            seq, job = got
            grant = await self.windows.acquire(dest, job.key)
            if grant.verdict == "dead":
                await self.defer_parked(dest, grant)
                return
            if grant.verdict == "wait":
                self._wake_at(dest, grant.after)
                return
            await work.submit_job(job)
            await work.unpark(seq)

    async def defer_parked(self, dest: Destination, grant: Grant) -> None:
        """A dead destination: defer every job parked for it (≈ qmgr_defer_todo)."""
        work = self.ctx.work
        while (got := await work.first_parked(dest.transport, dest.key)) is not None:
            seq, job = got
            await self.suspend(job, grant)
            await work.unpark(seq)
        await self.windows.unmark_waiting(dest)

    async def suspend(self, job: DeliveryJob, grant: Grant) -> None:
        """Defer a job's recipients without a connection, logged as Postfix's qmgr does:
        ``status=deferred (delivery temporarily suspended: ...)``."""
        stats = Stats.for_job(job)
        results = []
        for index, rcpt in zip(job.indexes, job.recipients, strict=False):
            log_delivery(job.queue_id, rcpt, "none", stats, grant.dsn, "deferred", grant.reason,
                         transport=job.transport)
            results.append(RcptResult(index, "deferred", grant.dsn, grant.reason, "none"))
        status = status_of(job, results)
        status.job = ""  # it held no slot
        await self.ctx.work.report(status)

    async def remind(self, queue_id: str) -> None:
        """A lease ran out while a job of the message waits: make sure its destination
        is swept (its mark can be lost with Redis's data)."""
        job = await self.ctx.work.parked_job_of(queue_id)
        if job is not None:
            await self.windows.mark_waiting(Destination(job.transport, job.destination))

    # -- the sweep ---------------------------------------------------------------

    async def sweep_forever(self) -> None:
        while not self.ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stopping.wait(), SWEEP_INTERVAL)
                return
            try:
                await self.sweep()
            except Exception as exc:  # the bus or Redis away: the next sweep tries again
                log.warning("warning: destination sweep failed: %s: %s", type(exc).__name__, exc)

    async def sweep(self) -> None:
        for dest, member in await self.windows.expired():
            queue_id = member.partition(" ")[0]
            if await self.ctx.work.job_running(dest.transport, queue_id):
                await self.windows.renew(dest, member)
            else:
                await self.windows.forget(dest, member)
        for dest in await self.windows.ready():
            await self.promote(dest)

    def _wake_at(self, dest: Destination, when: float) -> None:
        """Try ``dest`` again when its rate delay has passed (the sweep is the backstop)."""
        if when <= 0:
            return
        delay = max(0.0, when - time.time())

        async def later() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await self.promote(dest)

        task = asyncio.create_task(later())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
