"""The loop every delivery agent runs (≈ the deliver_request protocol of Postfix's
agents, qmgr_deliver.c's crash handling).

An agent takes a job, checks that its message still wants it when it was
handed out again, reads the content (a small message: before the gate, so
that the slot is not held during the read), passes the destination's gate
(:mod:`postbus.schedule.gate`: a slot in its concurrency window, or parked,
or deferred because the destination is dead), delivers,
frees the slot with feedback, reports, and only then acknowledges the job:
a crash anywhere before means the job is handed out again (at least once,
never lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from postbus import events, metrics
from postbus.bus.ack_subject import deliveries
from postbus.bus.consumer import consume, keep_alive
from postbus.bus.subjects import WORK_STREAM, deliver_consumer, deliver_filter
from postbus.config.loader import Config
from postbus.delivery import Outcome, Stats, log_delivery
from postbus.queue.entry import CodecError, DeliveryJob, DeliveryStatus, RcptResult
from postbus.queue.file import QueueFile
from postbus.queue.work import WorkBus
from postbus.schedule.gate import Gate
from postbus.schedule.windows import Grant
from postbus.service import ServiceContext

log = logging.getLogger("postbus.delivery")

#: What a job's recipients get when its agent cannot handle it (≈ qmgr_deliver.c).
CRASH_DSN = "4.3.0"
CRASH_TEXT = "unknown mail transport error"

#: Messages up to this size are read before their job asks for a slot: a
#: destination's window counts deliveries, and the read (a bus round trip,
#: several milliseconds on a busy agent) would otherwise hold a slot too.
READ_AHEAD = 256 * 1024

Deliver = Callable[[DeliveryJob, bytes, Stats], Awaitable[list[RcptResult]]]


async def handle_job(ctx: ServiceContext, gate: Gate, msg: Msg, deliver: Deliver) -> None:
    """One job: still wanted? a slot? content, deliver, free the slot, report, ack.

    Before connecting, a job that JetStream hands out again (its agent died)
    or that belongs to an attempt taken up again, or that waited for its
    destination, is dropped when the queue no longer wants it: delivered,
    deleted, or a later attempt runs (fencing). A job that cannot be decoded
    raises CodecError: the consumer loop moves it to the corrupt queue.
    """
    job = WorkBus.read_job(msg)
    redelivered = deliveries(msg) > 1
    if (job.recheck or redelivered) and not await attempt_is_current(ctx.queue, job):
        log.info("%s: delivery job of attempt %s dropped: the queue no longer wants it",
                 job.queue_id, job.attempt_id)
        await msg.ack()
        return
    content = None
    if job.size <= READ_AHEAD:  # read before the slot, so the slot is held for less
        try:
            content = await ctx.queue.content(job.queue_id, job.chunks, job.bucket)
        except NotFoundError:
            _gone(job)
            await msg.ack()
            return
    if not await gate.admit(job):  # parked for a slot, or deferred: its destination is dead
        await msg.ack()
        return
    stats = Stats.for_job(job)
    async with keep_alive(msg, beat_interval(ctx.cfg)):
        if content is None:
            try:
                content = await ctx.queue.content(job.queue_id, job.chunks, job.bucket)
            except NotFoundError:
                _gone(job)
                await gate.done(job)
                await msg.ack()
                return
        results = await deliver(job, content, stats)
        hop = _site_failure(stats.site_failure)
        await free_slot(gate, job, hop.dsn if hop else "", hop.reason if hop else "")
        await ctx.work.report(status_of(job, results))
    for result in results:
        ctx.work.record(outcome_event(job, result))
    await msg.ack()
    acked = _acked.get(ctx.service)
    if acked is None:
        acked = _acked[ctx.service] = metrics.bus_messages_processed.labels(
            deliver_consumer(ctx.service), "ack")
    acked.inc()


def _gone(job: DeliveryJob) -> None:
    log.warning("%s: message content is gone; dropping delivery job", job.queue_id)


#: Per service, its counter of acknowledged jobs (``labels()`` costs thrice the count).
_acked: dict[str, Any] = {}
_beats: weakref.WeakKeyDictionary[Config, float] = weakref.WeakKeyDictionary()


def beat_interval(cfg: Config) -> float:
    """How often a long delivery tells JetStream it is at work: a third of
    postbus_ack_wait, read once per configuration (not parsed for every job)."""
    got = _beats.get(cfg)
    if got is None:
        got = _beats[cfg] = max(1.0, cfg.time("postbus_ack_wait") / 3)
    return got


async def free_slot(gate: Gate, job: DeliveryJob, hop_dsn: str, hop_reason: str) -> None:
    """Free the slot of a delivery that took place. Redis away must not fail the
    job now: handed out again, it would be delivered twice. The slot's lease
    runs out instead, and the sweep frees it (its job is gone)."""
    try:
        await gate.done(job, hop_dsn, hop_reason)
    except Exception as exc:
        log.warning("warning: %s: cannot free the destination slot now (the sweep will):"
                    " %s: %s", job.queue_id, type(exc).__name__, exc)


def _site_failure(outcome: Outcome | None) -> Outcome | None:
    """A soft failure of the destination itself counts against its window."""
    return outcome if outcome is not None and outcome.status == "deferred" else None


def outcome_event(job: DeliveryJob, result: RcptResult) -> events.Event | None:
    """The delivered, deferred or bounced event of one recipient of a job."""
    position = job.indexes.index(result.index) if result.index in job.indexes else -1
    if position < 0:
        return None
    rcpt = job.recipients[position]
    now = time.time()
    return events.make(
        {"sent": "delivered"}.get(result.status, result.status), job.queue_id,
        sender=job.sender, recipient=rcpt.address, orig_recipient=rcpt.orig_rcpt,
        transport=f"{job.transport}:{job.nexthop}", relay=result.relay, dsn=result.dsn,
        reason=result.reason, delay=round(max(0.0, now - job.arrival_time), 3),
        attempt=job.attempt, time=now,
    )


def status_of(job: DeliveryJob, results: list[RcptResult]) -> DeliveryStatus:
    return DeliveryStatus(job.queue_id, job.attempt, job.transport, job.nexthop, results,
                          attempt_id=job.attempt_id, token=job.token, whole=job.whole,
                          bucket=job.bucket)


async def attempt_is_current(queue: QueueFile, job: DeliveryJob) -> bool:
    """The message is still queued, this job's attempt is its current one, and the
    job's recipients still wait for it."""
    got = await queue.get(job.queue_id, job.bucket)
    if got is None:
        return False
    entry, _ = got
    if entry.attempt_id != job.attempt_id:
        return False
    return any(
        i < len(entry.recipients) and not entry.recipients[i].final for i in job.indexes
    )


async def defer_all(ctx: ServiceContext, job: DeliveryJob, dsn: str, reason: str) -> None:
    """Defer every recipient of a job without a delivery, logged as Postfix's qmgr
    does (``relay=none, ... status=deferred (reason)``), and report it."""
    stats = Stats.for_job(job)
    results = []
    for index, rcpt in zip(job.indexes, job.recipients, strict=False):
        log_delivery(job.queue_id, rcpt, "none", stats, dsn, "deferred", reason,
                     transport=job.transport)
        results.append(RcptResult(index, "deferred", dsn, reason, "none"))
    await ctx.work.report(status_of(job, results))


async def report_crash(ctx: ServiceContext, gate: Gate, msg: Msg) -> None:
    """A job that went to the corrupt queue will never report: defer its
    recipients as Postfix's qmgr does when an agent dies ("4.3.0 unknown mail
    transport error"), so the message is retried with backoff instead of
    staying active, and free its slot with negative feedback. An undecodable
    job names no recipients: nothing to do."""
    try:
        job = WorkBus.read_job(msg)
    except CodecError:
        return
    await gate.done(job, CRASH_DSN, CRASH_TEXT)
    await defer_all(ctx, job, CRASH_DSN, CRASH_TEXT)


async def serve_jobs(ctx: ServiceContext, deliver: Deliver, *, concurrency: int = 64) -> None:
    """Consume ``postbus.deliver.<service>`` until the service stops; sweep the
    service's destinations meanwhile."""

    async def suspend(job: DeliveryJob, grant: Grant) -> None:
        await defer_all(ctx, job, grant.dsn, grant.reason)

    gate = Gate(ctx.cfg, ctx.work, ctx.service, suspend)
    ctx.on_reload(gate.reconfigure)
    await gate.listen()

    async def handler(msg: Msg) -> None:
        await handle_job(ctx, gate, msg, deliver)

    async def crashed(msg: Msg) -> None:
        await report_crash(ctx, gate, msg)

    await asyncio.gather(
        gate.sweep_forever(ctx.stopping),
        consume(
            ctx,
            stream=WORK_STREAM,
            subject=deliver_filter(ctx.service),
            durable=deliver_consumer(ctx.service),
            handler=handler,
            concurrency=concurrency,
            on_poison=crashed,
        ),
    )
