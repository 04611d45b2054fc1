"""Starting delivery attempts (≈ qmgr_active.c: taking mail into the active queue).

Two kinds of bus work start an attempt, each from its own durable consumer
so any number of qmgr replicas share them:

* new mail: chunk 0 of a message (``postbus.q.<qid>.msg``), whose headers
  carry the entry as received;
* wake-ups (``postbus.wake.<qid>``): a deferred message's timer fired, or an
  administrator released, requeued or flushed it.

The trigger or wake-up holds its attempt open: instead of acknowledging it
when the jobs are out, the qmgr gives it back to JetStream with a delay of
``postbus_delivery_lease`` (a nak), and whichever qmgr records the outcome
acknowledges it through the token the jobs carry. When the lease runs out
first, JetStream hands it out again: if a job or a result of the message is
still on the bus the attempt goes on (another lease); if none is, the
attempt was lost (a qmgr killed while routing, jobs or results gone with a
nats-server restart, a result that could never be read) and is taken up
anew, under a new attempt id written to the entry before any job goes out,
so jobs of the lost attempt are fenced off. The entry names the message
(``holder``) whose lease the current attempt is: any other trigger or
wake-up of the message that comes back is stale.

A first attempt writes nothing: routing and jobs come from the entry in the
trigger, and the attempt id is the trigger's stream sequence. The entry is
written only when the qmgr settles a recipient itself (error:, retry:,
discard:) or the attempt was taken up again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from nats.aio.msg import Msg

from postbus import events, metrics
from postbus.bus import subjects as s
from postbus.bus.ack_subject import deliveries
from postbus.queue.buckets import Sweeper
from postbus.queue.entry import QueueEntry
from postbus.queue.file import QueueConflict, QueueFile
from postbus.service import ServiceContext
from qmgr.results import Recorder
from qmgr.scheduler import Scheduler

log = logging.getLogger("postbus.qmgr")

WAKE_SLACK = 1.0  # seconds a wake-up may come early (timers have one-second steps)


def new_attempt_id() -> str:
    return secrets.token_hex(8)


class Attempts:
    def __init__(self, ctx: ServiceContext, recorder: Recorder, sweeper: Sweeper) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.scheduler = Scheduler(ctx)
        self.sweeper = sweeper
        self.reconnects = -1  # nats-server restarts seen (-1: none looked at yet)
        self.recheck_below = 0  # triggers up to this stream sequence may be stale
        self.restarted = asyncio.Lock()

    async def on_incoming(self, msg: Msg) -> None:
        entry, revision = QueueFile.trigger_entry(msg)
        self.sweeper.saw(entry.bucket)
        if deliveries(msg) > 1:
            await self.lease_ended(msg, entry.queue_id, entry.bucket)
            return
        if await self.may_be_stale(entry.holder):
            got = await self.ctx.queue.get(entry.queue_id, entry.bucket)
            if got is None:
                await msg.ack()  # delivered or bounced before the restart
                return
            if got[1] != 0:  # it has an entry of its own: as a lease that came back
                await self.lease_ended(msg, entry.queue_id, entry.bucket)
                return
        if entry.queue == "hold":  # cleanup's HOLD action: it waits for postsuper -H
            await msg.ack()
            return
        log.info("%s: from=<%s>, size=%d, nrcpt=%d (queue active)",
                 entry.queue_id, entry.sender, entry.size, len(entry.recipients))
        metrics.qmgr_messages_inserted.inc()
        self.ctx.work.record(events.received(entry))
        entry.attempts = 1
        entry.last_attempt = time.time()
        await self.start(msg, entry, revision, write=False)

    async def may_be_stale(self, seq: int) -> bool:
        """Whether a trigger handed out as new may be one acknowledged already:
        JetStream writes a consumer's acks to disk a little after taking them, so
        after a kill -9 of nats-server it may hand out again a trigger whose
        message was removed (marked done) or given an entry of its own. Every
        trigger written before the qmgr's start or the last nats-server restart
        it saw is read against the queue; later ones cannot be stale."""
        assert self.ctx.nc is not None
        reconnects = self.ctx.nc.stats["reconnects"]
        if reconnects != self.reconnects:
            async with self.restarted:  # the triggers handled meanwhile wait for the answer
                if reconnects != self.reconnects:
                    self.recheck_below = (await self.ctx.queue.js.stream_info(
                        s.QUEUE_STREAM)).state.last_seq
                    self.reconnects = reconnects
        return seq <= self.recheck_below

    async def on_wakeup(self, msg: Msg) -> None:
        queue_id, _ = QueueFile.read_wakeup(msg.data)
        if deliveries(msg) > 1:
            await self.lease_ended(msg, queue_id)
            return
        got = await self.ctx.queue.get(queue_id)
        if got is None:
            await msg.ack()
            return
        entry, revision = got
        due = entry.next_attempt - time.time() <= WAKE_SLACK
        if entry.queue != "deferred" or not due:
            await msg.ack()  # stale: released, requeued, held, retried or removed meanwhile
            return
        await self.begin(msg, entry, revision)

    async def lease_ended(self, msg: Msg, queue_id: str, bucket: str = "") -> None:
        """A trigger or wake-up came back: is its attempt still running, or lost?
        (``bucket``: where a trigger's message was written.)"""
        got = await self.ctx.queue.get(queue_id, bucket)
        if got is None:
            await msg.ack()  # the message is gone: delivered, bounced or deleted
            return
        entry, revision = got
        if entry.holder != msg.metadata.sequence.stream or entry.queue in ("deferred", "hold"):
            await msg.ack()  # not (or no longer) the lease of the current attempt
            return
        if await self.ctx.work.in_flight(queue_id):
            await msg.nak(delay=self.scheduler.lease)  # still being delivered: keep it
            return
        log.warning("warning: %s: attempt %s was lost; trying again", queue_id,
                    entry.attempt_id)
        await self.begin(msg, entry, revision, recheck=True)

    async def begin(
        self, msg: Msg, entry: QueueEntry, revision: int, *, recheck: bool = False
    ) -> None:
        """A new attempt with a new id, held by ``msg``."""
        if revision == 0 and entry.attempts == 0:
            entry.attempts = 1  # the first attempt wrote nothing
        entry.queue = "active"
        entry.attempts += 1
        entry.attempt_id = new_attempt_id()
        entry.holder = msg.metadata.sequence.stream
        entry.last_attempt = time.time()
        for rcpt in entry.recipients:
            if rcpt.state == "active":
                rcpt.state = "pending"
        await self.start(msg, entry, revision, write=True, recheck=recheck)

    async def start(
        self, msg: Msg, entry: QueueEntry, revision: int, *, write: bool,
        recheck: bool = False,
    ) -> None:
        """Route, write the entry when needed, hand out the jobs, hold ``msg`` open."""
        token = msg.reply or ""
        settled = await self.scheduler.route(entry)
        if write or settled:
            try:
                revision = await self.ctx.queue.update(entry, revision)
            except QueueConflict:
                await msg.nak(delay=self.scheduler.lease)  # another qmgr got there first
                return
        self.ctx.work.record(events.Active(queue_id=entry.queue_id, attempt=entry.attempts))
        for rcpt in settled:  # by the qmgr itself (error:, discard:, retry:), after active
            self.ctx.work.record(events.for_recipient(entry, rcpt))
        jobs = self.scheduler.jobs(entry, token, recheck=recheck)
        if not jobs:  # the qmgr settled every recipient itself
            await self.recorder.conclude(entry, revision, token)
            return
        await self.scheduler.hand_out(jobs)
        await msg.nak(delay=self.scheduler.lease)  # held open until the outcome is recorded
