"""The gate every delivery job passes before its agent connects (≈ qmgr_job.c's entry
selection, qmgr_deliver.c's feedback, qmgr_defer.c).

The qmgr cuts an attempt into jobs, one per destination and recipient
limit, and publishes them; the agent that takes a job asks the
destination's window for a slot (:mod:`postbus.schedule.windows`) before it
connects, and gives it back, with Postfix's feedback, as soon as the
delivery is over: the slot is held for the delivery itself, not for the
trip of its result back to a qmgr.

A job that gets no slot first waits in its agent, a short while, for a
slot to be freed: by its own agent, or by another one, which then says so
on ``postbus.slot.<transport>.<destination key>`` (core NATS) when the
window's state in Redis shows that another agent waits (so one agent alone
publishes nothing). Without that word, replicas parked what a single
agent would have delivered at once, and two agents delivered less than
one.

A job that still gets no slot is parked on
``postbus.wait.<transport>.<destination key>.<qid>`` (in the work stream,
so every replica sees it, and the qmgr's ``in_flight`` keeps its attempt
alive). The agent that frees a slot moves the oldest parked job of that
destination back to the agents, marked for a check that its message still
wants it. A dead destination's parked jobs, and every new one, are
deferred at once with Postfix's words ("delivery temporarily suspended:
..."), without a connection.

Every second each agent also sweeps its transport: slots whose lease ran
out are kept while their job is still on the bus and freed otherwise (an
agent died), and destinations with parked jobs and room (a rate delay
passed, a dead destination came back, a wake-up was lost) move on. A
parked job moved twice is one job: the slot is named after the job, and
the job's idempotency key makes the second publish a duplicate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from postbus.bus import subjects as s
from postbus.config.loader import Config
from postbus.queue.entry import DeliveryJob
from postbus.queue.work import WorkBus
from postbus.schedule.windows import Destination, Grant, Windows

log = logging.getLogger("postbus.schedule")

SWEEP_INTERVAL = 1.0  # seconds between sweeps
LOCAL_WAIT = 1.0  # seconds a job may wait in its agent for a slot before it is parked


#: What a job waiting here is told when parked jobs are owed the slot that came free.
BEHIND_PARKED = Grant("wait", queued=True)

#: Defers a job's recipients without a connection (the agent's report).
Suspend = Callable[[DeliveryJob, Grant], Awaitable[None]]


class Gate:
    """One per delivery agent process: admit jobs, free slots, move parked jobs."""

    def __init__(self, cfg: Config, work: WorkBus, transport: str, suspend: Suspend) -> None:
        self.work = work
        self.transport = transport
        self.suspend = suspend
        self.agent = secrets.token_hex(6)
        self.reconfigure(cfg)
        self._timers: set[asyncio.Task[None]] = set()
        self._promoting: dict[Destination, bool] = {}  # looping now; asked again meanwhile
        self._waiters: dict[Destination, collections.deque[_Waiter]] = {}

    def reconfigure(self, cfg: Config) -> None:
        self.windows = Windows(cfg, cfg.time("postbus_delivery_lease"), self.agent)

    @staticmethod
    def destination(job: DeliveryJob) -> Destination:
        return Destination(job.transport, job.destination or job.nexthop.lower())

    async def admit(self, job: DeliveryJob) -> bool:
        """True when the job has a slot; otherwise it was parked, or deferred
        because its destination is dead.

        Without a slot, a job first waits here, a short while, for a slot this
        process frees (a burst of jobs to one destination is the common case,
        and parking costs four bus operations): the job that frees it hands
        it over in the same Redis call (:meth:`Windows.hand_over`). It is parked
        when that wait runs out, when jobs are parked for the destination
        already (they go first), or under a rate delay."""
        dest = self.destination(job)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCAL_WAIT
        grant = await self.windows.acquire(dest, job.key)
        while True:
            if grant.verdict == "go":
                return True
            if grant.verdict == "dead":
                await self.suspend(job, grant)
                return False
            left = deadline - loop.time()
            if grant.queued or grant.after or left <= 0:
                break
            woken, handed = await self._wait_here(dest, job.key, left)
            if not woken:
                break
            # handed over, or a slot came free elsewhere: ask for it
            grant = handed or await self.windows.acquire(dest, job.key)
        await self.work.park_job(job, dest.key)
        await self.windows.mark_waiting(dest)  # after parking: see _move_parked()
        self._wake_at(dest, grant.after)
        return False

    async def _wait_here(self, dest: Destination, member: str,
                         timeout: float) -> tuple[bool, Grant | None]:
        """Wait for this process to free a slot of ``dest``: (False, None) when none
        did in time; else (True, the grant handed over, or None: ask yourself)."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), member)
        self._waiters.setdefault(dest, collections.deque()).append(waiter)
        # a plain timer, not wait_for(shield()): in a burst to one destination most jobs
        # wait here, and those cost a task switch and two futures more each
        timer = loop.call_later(timeout, waiter.expire)
        try:
            got = await waiter.future
            return (False, None) if got is _EXPIRED else (True, got)
        finally:
            timer.cancel()
            queue = self._waiters.get(dest)
            if queue is not None:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
                if not queue:
                    del self._waiters[dest]

    def _next_waiter(self, dest: Destination) -> _Waiter | None:
        for waiter in self._waiters.get(dest, ()):
            if not waiter.future.done() and not waiter.promised:
                return waiter
        return None

    def _wake_one(self, dest: Destination) -> bool:
        """Hand a freed slot's chance to a job waiting here; False when none waits."""
        waiter = self._next_waiter(dest)
        if waiter is None:
            return False
        waiter.future.set_result(None)
        return True

    async def done(self, job: DeliveryJob, hop_dsn: str = "", hop_reason: str = "") -> None:
        """The delivery is over: free the slot with feedback (negative when the
        destination itself failed), handing it over to a job waiting here, or
        move a parked job on, or defer them all when the destination just died."""
        dest = self.destination(job)
        waiter = self._next_waiter(dest)
        if waiter is None:
            freed = await self.windows.release(dest, job.key, hop_dsn, hop_reason)
        else:
            waiter.promised = True
            try:
                freed, grant = await self.windows.hand_over(dest, job.key, waiter.member,
                                                            hop_dsn, hop_reason)
            except BaseException:
                waiter.settle(None)  # it asks again itself
                raise
            if grant is None:  # no hand-over: dead, or parked jobs go first, or freed already
                grant = freed.dead or (BEHIND_PARKED if freed.held and freed.waiting else None)
            waiter.settle(grant)
        if freed.dead is not None:
            log.info("%s: %s", dest.name or dest.transport, freed.dead.reason)
            if freed.waiting:
                await self._drain(dest, freed.dead)
        elif freed.held and freed.waiting:
            await self.promote(dest)  # parked jobs came first
        elif freed.held and waiter is None and freed.wanted:
            await self._announce(dest)  # a job waits in another agent

    async def listen(self) -> None:
        """Hear slots other agents of this transport free (:meth:`_announce`)."""
        await self.work.nc.subscribe(s.slot_filter(self.transport), cb=self._heard)

    async def _announce(self, dest: Destination) -> None:
        with contextlib.suppress(Exception):  # a hint: without it, the wait runs out
            await self.work.nc.publish(s.slot_subject(dest.transport, dest.key),
                                       dest.ident.encode())

    async def _heard(self, msg: Msg) -> None:
        with contextlib.suppress(UnicodeDecodeError):
            self._wake_one(Destination.from_ident(msg.data.decode()))

    async def _drain(self, dest: Destination, grant: Grant) -> None:
        """Defer every job parked for a dead destination (≈ qmgr_defer_todo)."""
        while (got := await self.work.first_parked(dest.transport, dest.key)) is not None:
            seq, parked = got
            await self.suspend(parked, grant)
            await self.work.unpark(seq)
        await self.windows.unmark_waiting(dest)

    async def promote(self, dest: Destination) -> None:
        """Move parked jobs of ``dest`` back to the agents while its window has room.

        One loop per destination in this process: deliveries end many at a
        time, and loops side by side would each move the same oldest job
        (harmless, but N times the work); a request while the loop runs makes
        it look once more instead."""
        if dest in self._promoting:
            self._promoting[dest] = True
            return
        self._promoting[dest] = False
        try:
            while True:
                await self._move_parked(dest)
                if not self._promoting[dest]:
                    return
                self._promoting[dest] = False
        finally:
            del self._promoting[dest]

    async def _move_parked(self, dest: Destination) -> None:
        while True:
            got = await self.work.first_parked(dest.transport, dest.key)
            if got is None:
                # Forget the destination, then look again: a job parked in between
                # marks it again after parking, so it cannot be missed.
                await self.windows.unmark_waiting(dest)
                if await self.work.first_parked(dest.transport, dest.key) is not None:
                    await self.windows.mark_waiting(dest)
                return
            seq, job = got
            grant = await self.windows.acquire(dest, job.key)
            if grant.verdict == "dead":
                await self._drain(dest, grant)
                return
            if grant.verdict == "wait":
                self._wake_at(dest, grant.after)
                return
            job.recheck = True  # its message may have been deleted while it waited
            await self.work.submit_job(job, parked=seq)  # its own key: not a duplicate
            await self.work.unpark(seq)

    # -- the sweep ---------------------------------------------------------------

    async def sweep_forever(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SWEEP_INTERVAL)
                return
            try:
                await self.sweep()
            except Exception as exc:  # the bus or Redis away: the next sweep tries again
                log.warning("warning: destination sweep failed: %s: %s", type(exc).__name__, exc)

    async def sweep(self) -> None:
        for dest, member in await self.windows.expired():
            if dest.transport != self.transport:
                continue
            queue_id = member.partition(" ")[0]
            if await self.work.job_running(dest.transport, queue_id):
                await self.windows.renew(dest, member)
            else:
                await self.windows.forget(dest, member)
        for dest in await self.windows.ready():
            if dest.transport == self.transport:
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


async def remind(windows_cfg: Config, work: WorkBus, queue_id: str) -> None:
    """A lease ran out while a job of the message is parked: make sure its
    destination is swept (its mark can be lost with Redis's data)."""
    job = await work.parked_job_of(queue_id)
    if job is not None:
        windows = Windows(windows_cfg, windows_cfg.time("postbus_delivery_lease"))
        await windows.mark_waiting(Gate.destination(job))


class _Waiter:
    """A job waiting in this agent for a slot of its destination."""

    def __init__(self, future: asyncio.Future[Grant | None], member: str) -> None:
        self.future = future
        self.member = member
        self.promised = False  # a job that frees a slot is handing it over to this one

    def settle(self, grant: Grant | None) -> None:
        if not self.future.done():
            self.future.set_result(grant)

    def expire(self) -> None:
        """The wait ran out: end it, unless a hand-over is under way (its answer ends it)."""
        if not self.promised:
            self.settle(_EXPIRED)


#: What a wait that ran out gets (compared by identity).
_EXPIRED = Grant("wait", reason="no slot came free in time")
