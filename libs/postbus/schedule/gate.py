"""The gate every delivery job passes before its agent connects (≈ qmgr_job.c's entry
selection, qmgr_deliver.c's feedback, qmgr_defer.c).

The qmgr cuts an attempt into jobs, one per destination and recipient
limit, and publishes them; the agent that takes a job asks the
destination's window for a slot (:mod:`postbus.schedule.windows`) before it
connects, and gives it back, with Postfix's feedback, as soon as the
delivery is over: the slot is held for the delivery itself, not for the
trip of its result back to a qmgr.

A job that gets no slot first waits in its agent, a short while, in line
for a slot (a ticket, :meth:`Windows.acquire`): the job that frees one, in
any agent, gives it to the oldest ticket in the same Redis call, and says
so on ``postbus.slot.<transport>.<agent>`` (core NATS) when that
ticket's job waits in another agent (to that agent alone; one agent alone
publishes nothing). With each agent handing its slots only to its own waiters,
replicas parked what a single agent would have delivered at once, and two
agents delivered less than one: an agent that held few of the window's
slots could not serve the jobs it had taken within the wait.

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
LOCAL_WAIT = 1.0  # seconds a job may wait in its agent for a slot while the line stands still
MOST_WAIT = 5.0  # seconds it may wait in all, while the line moves


#: What a job waiting here is told when parked jobs are owed the slot that came free.
BEHIND_PARKED = Grant("wait", queued=True)
#: What a job waiting here is told when its ticket was served: it holds a slot.
GO = Grant("go")
#: What a job waiting here is told when its wait ran out (it gives its ticket up).
RAN_OUT = Grant("wait", reason="no slot came free in time")

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
        # jobs waiting here for a slot, by member, oldest first
        self._waiters: dict[Destination, dict[str, asyncio.Future[Grant]]] = {}
        self._moved: dict[Destination, float] = {}  # when a ticket was last served (loop time)

    def reconfigure(self, cfg: Config) -> None:
        self.windows = Windows(cfg, cfg.time("postbus_delivery_lease"), self.agent)

    @staticmethod
    def destination(job: DeliveryJob) -> Destination:
        return Destination(job.transport, job.destination or job.nexthop.lower())

    async def admit(self, job: DeliveryJob) -> bool:
        """True when the job has a slot; otherwise it was parked, or deferred
        because its destination is dead.

        Without a slot, a job first waits here, a short while, in line for one
        (a burst of jobs to one destination is the common case, and parking
        costs four bus operations): the job that frees a slot, in this agent or
        another, gives it to the oldest waiting in the same Redis call
        (:meth:`Windows.free`). It is parked when that wait runs out, when jobs
        are parked for the destination already (they go first), or under a rate
        delay."""
        dest = self.destination(job)
        grant = await self.windows.acquire(dest, job.key, ticket=True)
        if grant.verdict == "wait" and not grant.queued and not grant.after:
            grant = await self._wait_here(dest, job.key)
        if grant.verdict == "go":
            return True
        if grant.verdict == "dead":
            await self.suspend(job, grant)
            return False
        await self.work.park_job(job, dest.key)
        await self.windows.mark_waiting(dest)  # after parking: see _move_parked()
        self._wake_at(dest, grant.after)
        return False

    async def _wait_here(self, dest: Destination, member: str) -> Grant:
        """Wait in line for a slot of ``dest``: "go" when the job's ticket was served;
        else (the wait ran out, or it was told the slot is not for it) as asked
        again without a ticket.

        The wait runs out when the line has not moved for LOCAL_WAIT (a stalled
        destination: park, and let the agent take other work), or after
        MOST_WAIT. A line that moves is worth waiting in: the jobs that several
        agents hold for a busy destination may be more than its window serves
        in LOCAL_WAIT, and each park costs more than the wait."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Grant] = loop.create_future()
        waiting = self._waiters.setdefault(dest, {})
        waiting[member] = future
        started = loop.time()
        timer: asyncio.TimerHandle

        def check() -> None:  # a plain timer, not wait_for(shield()): most jobs of a burst wait
            nonlocal timer
            if future.done():
                return
            moved = self._moved.get(dest, started)
            deadline = min(max(moved, started) + LOCAL_WAIT, started + MOST_WAIT)
            if deadline > loop.time():
                timer = loop.call_at(deadline, check)
            else:
                future.set_result(RAN_OUT)

        timer = loop.call_at(started + LOCAL_WAIT, check)
        try:
            told = await future
            if told.verdict == "go":
                return told
        finally:
            timer.cancel()
            if waiting.get(member) is future:
                del waiting[member]
            if not waiting and self._waiters.get(dest) is waiting:
                del self._waiters[dest]
                self._moved.pop(dest, None)
        return await self.windows.give_up(dest, member)

    def _line_moved(self, dest: Destination) -> None:
        if dest in self._waiters:
            self._moved[dest] = asyncio.get_running_loop().time()

    def _tell(self, dest: Destination, grant: Grant, member: str = "", every: bool = False) -> None:
        """Settle the wait of ``member`` (else of the oldest, or ``every`` job) waiting here."""
        waiting = self._waiters.get(dest, {})
        futures = [waiting.get(member)] if member else list(waiting.values())
        for future in futures:
            if future is not None and not future.done():
                future.set_result(grant)
                if not every:
                    return

    async def done(self, job: DeliveryJob, hop_dsn: str = "", hop_reason: str = "") -> None:
        """The delivery is over: free the slot with feedback (negative when the
        destination itself failed), giving it to the oldest job waiting for one
        (here, or in another agent: then say so), or move a parked job on, or
        defer them all when the destination just died."""
        dest = self.destination(job)
        freed = await self.windows.free(dest, job.key, hop_dsn, hop_reason)
        if freed.granted:
            self._line_moved(dest)
        for agent, member in freed.granted:
            if agent == self.agent:
                self._tell(dest, GO, member)
            else:
                await self._announce(dest, agent, member)
        if freed.dead is not None:
            log.info("%s: %s", dest.name or dest.transport, freed.dead.reason)
            self._tell(dest, freed.dead, every=True)
            if freed.waiting:
                await self._drain(dest, freed.dead)
        elif freed.held and freed.waiting:
            self._tell(dest, BEHIND_PARKED)
            await self.promote(dest)  # parked jobs came first
        elif freed.held and freed.after:
            self._tell(dest, Grant("wait", after=freed.after))

    async def listen(self) -> None:
        """Hear of the slots other agents of this transport give to jobs waiting here
        (:meth:`_announce`)."""
        await self.work.nc.subscribe(s.slot_subject(self.transport, self.agent), cb=self._heard)

    async def _announce(self, dest: Destination, agent: str, member: str) -> None:
        with contextlib.suppress(Exception):  # without it, the wait runs out, then finds the slot
            await self.work.nc.publish(s.slot_subject(dest.transport, agent),
                                       f"{dest.ident}\n{member}".encode())

    async def _heard(self, msg: Msg) -> None:
        with contextlib.suppress(UnicodeDecodeError):
            ident, _, member = msg.data.decode().rpartition("\n")
            dest = Destination.from_ident(ident)
            self._line_moved(dest)
            self._tell(dest, GO, member)

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

