"""What every delivery agent shares (≈ log_adhoc.c, format_tv.c, smtp_chat.c's reply parsing).

A delivery agent takes a :class:`DeliveryJob` off the bus, reads the
content, delivers it and answers with one :class:`DeliveryStatus`. This
module holds the parts that must look the same whichever agent did the
work: the ``to=<...>, relay=..., delay=..., delays=a/b/c/d, dsn=...,
status=...`` log line, the delivery metrics, the reading of an SMTP reply
into status and enhanced status code, and the job loop itself
(:func:`serve_jobs`), so that each agent only writes ``deliver``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from postbus import events, metrics
from postbus.bus.consumer import consume, keep_alive
from postbus.bus.subjects import WORK_STREAM, deliver_consumer, deliver_filter
from postbus.queue.entry import CodecError, DeliveryJob, DeliveryStatus, RcptResult, Recipient
from postbus.queue.file import QueueFile
from postbus.queue.work import WorkBus
from postbus.service import ServiceContext

log = logging.getLogger("postbus.delivery")

Status = Literal["sent", "deferred", "bounced"]

#: What a job's recipients get when its agent cannot handle it (≈ qmgr_deliver.c).
CRASH_DSN = "4.3.0"
CRASH_TEXT = "unknown mail transport error"

_DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


# -- parameters not (yet) in the registry ---------------------------------------

#: Postfix parameters the delivery agents read that postbus.params does not
#: list yet, with Postfix's defaults. They move to the registry, then go.
# -- replies ------------------------------------------------------------------


def reply_status(code: int) -> Status:
    """2xx sent, 4xx deferred, anything else bounced (Postfix treats odd codes as hard)."""
    if 200 <= code < 300:
        return "sent"
    if 400 <= code < 500:
        return "deferred"
    return "bounced"


def reply_dsn(code: int, text: str) -> str:
    """The enhanced status code of a reply (≈ smtp_chat_resp()).

    A code at the start of the text counts only when its class digit agrees
    with the reply code; otherwise Postfix derives ``X.0.0`` from the reply
    class (and ``5.5.0`` for a reply outside 2xx/4xx/5xx).
    """
    match = _DSN_RE.match(text.lstrip())
    first = str(code)[:1]
    if match and match.group(1) == first:
        return match.group(0)
    return f"{first}.0.0" if first in ("2", "4", "5") else "5.5.0"


@dataclass(frozen=True)
class Reply:
    """One SMTP/LMTP reply: ``text`` is every line's text joined with newlines."""

    code: int
    text: str

    @property
    def status(self) -> Status:
        return reply_status(self.code)

    @property
    def dsn(self) -> str:
        return reply_dsn(self.code, self.text)

    def __str__(self) -> str:
        """The reply as Postfix logs it: ``550 5.1.1 text``, lines joined by spaces."""
        return f"{self.code} {' '.join(self.text.splitlines())}".rstrip()


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient: status, enhanced code and the text Postfix shows."""

    status: Status
    dsn: str
    reason: str

    @classmethod
    def from_reply(cls, reply: Reply, reason: str | None = None) -> Outcome:
        return cls(reply.status, reply.dsn, str(reply) if reason is None else reason)

    @classmethod
    def by_dsn(cls, dsn: str, reason: str) -> Outcome:
        """Status from the code's class: 2 sent, 4 deferred, 5 bounced."""
        return cls(reply_status(int(dsn[:1] or 5) * 100), dsn, reason)


def soften(dsn: str) -> str:
    """Turn a hard code into its soft twin (5.x.y -> 4.x.y), as Postfix does for retries."""
    return "4" + dsn[1:] if dsn.startswith("5") else dsn


# -- the log line ---------------------------------------------------------------


def format_tv(seconds: float, sig_dig: int = 2, max_dig: int = 2) -> str:
    """A time with only the digits that matter (≈ format_tv.c, to the digit).

    Large values round to whole seconds; small ones keep ``sig_dig``
    significant digits but never more than ``max_dig`` decimals
    (delay_logging_resolution_limit); trailing zeros are dropped.
    """
    million = 1_000_000
    total = max(0, round(seconds * million))
    sec, usec = divmod(total, million)
    ures = million // 10**max_dig
    wid = 10**sig_dig
    if ures < million:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (million // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    if ures > 1:
        usec += ures // 2
        if usec >= million:
            sec += 1
            usec -= million
    out = str(sec)
    if usec >= ures:
        out += "."
        rem, n = usec, million // 10
        while rem >= ures and n > 0:
            out += str(rem // n)
            rem %= n
            n //= 10
    return out


@dataclass
class Stats:
    """Time stamps of one delivery attempt (≈ MSG_STATS), as epoch seconds.

    ``active`` is when the qmgr took the message in, ``handoff`` when this
    agent picked the job up, ``conn_setup_done`` when a network agent had
    its session ready (0 for local delivery), ``reuse_count`` how often the
    session had been used before (Postfix's ``conn_use=`` is that plus one).
    ``site_failure`` is set by an agent when the destination itself failed
    (no server took a session, or it broke off): the qmgr's negative
    feedback, which may suspend the destination (≈ the hop status of
    deliver_request).
    """

    arrival: float
    active: float
    handoff: float
    conn_setup_done: float = 0.0
    reuse_count: int = 0
    site_failure: Outcome | None = None

    @classmethod
    def for_job(cls, job: DeliveryJob, handoff: float | None = None) -> Stats:
        active = job.active_time or job.queued_time or job.arrival_time
        return cls(job.arrival_time, active, time.time() if handoff is None else handoff)

    def delays(self, now: float) -> tuple[float, float, float, float, float]:
        """delay and delays=a/b/c/d as log_adhoc() computes them."""
        a = self.active - self.arrival
        b = self.handoff - self.active
        if self.conn_setup_done:
            c, d = self.conn_setup_done - self.handoff, now - self.conn_setup_done
        else:
            c, d = 0.0, now - self.handoff
        a, b, c, d = (max(0.0, x) for x in (a, b, c, d))
        return max(0.0, now - self.arrival), a, b, c, d


def log_delivery(
    queue_id: str,
    rcpt: Recipient,
    relay: str,
    stats: Stats,
    dsn: str,
    status: str,
    reason: str,
    *,
    transport: str,
    resolution: int = 2,
    now: float | None = None,
) -> str:
    """Log and count one recipient's delivery outcome; returns the line (≈ log_adhoc()).

    ``QID: to=<rcpt>, orig_to=<orig>, relay=..., [conn_use=N, ]delay=...,
    delays=a/b/c/d, dsn=X.Y.Z, status=... (reason)``. ``orig_to`` appears
    only when it differs (case-insensitively) from the recipient.
    """
    now = time.time() if now is None else now
    line = f"{queue_id}: to=<{rcpt.address}>"
    if rcpt.orig_rcpt and rcpt.orig_rcpt.lower() != rcpt.address.lower():
        line += f", orig_to=<{rcpt.orig_rcpt}>"
    line += f", relay={relay}"
    if stats.reuse_count > 0:
        line += f", conn_use={stats.reuse_count + 1}"
    delay, *parts = stats.delays(now)
    line += f", delay={format_tv(delay, 2, resolution)}, delays="
    line += "/".join(format_tv(x, 2, resolution) for x in parts)
    line += f", dsn={dsn}, status={status} ({reason})"
    log.info("%s", line)
    metrics.delivery_attempts.labels(transport, status, dsn[:1] or "4").inc()
    for stage, value in zip(metrics.QUEUE_STAGES, parts, strict=True):
        metrics.delivery_duration.labels(transport, stage).observe(value)
    if status != "deferred":
        metrics.delivery_delay.labels(transport, status).observe(delay)
    return line


# -- the job loop ---------------------------------------------------------------

Deliver = Callable[[DeliveryJob, bytes, Stats], Awaitable[list[RcptResult]]]


async def handle_job(ctx: ServiceContext, msg: Msg, deliver: Deliver) -> None:
    """One job: check it is still wanted, read content, deliver, report, then ack.

    The report comes before the ack, so a crash anywhere before means the
    job is handed out again (at least once, never lost). Before connecting,
    a job that JetStream hands out again (its agent died) or that belongs to
    an attempt taken up again is dropped when the queue no longer wants it:
    delivered, deleted, or a later attempt runs (fencing). A job that cannot be decoded raises
    CodecError: the consumer loop moves it to the corrupt queue.
    """
    job = WorkBus.read_job(msg)
    redelivered = (msg.metadata.num_delivered or 1) > 1
    if (job.recheck or redelivered) and not await attempt_is_current(ctx.queue, job):
        log.info("%s: delivery job of attempt %s dropped: the queue no longer wants it",
                 job.queue_id, job.attempt_id)
        await msg.ack()
        return
    stats = Stats.for_job(job)
    async with keep_alive(msg, max(1.0, ctx.cfg.time("postbus_ack_wait") / 3)):
        try:
            content = await ctx.queue.content(job.queue_id, job.chunks)
        except NotFoundError:
            log.warning("%s: message content is gone; dropping delivery job", job.queue_id)
            await msg.ack()
            return
        results = await deliver(job, content, stats)
        await ctx.work.report(status_of(job, results, stats.site_failure))
    for result in results:
        ctx.work.record(outcome_event(job, result))
    await msg.ack()
    metrics.bus_messages_processed.labels(deliver_consumer(ctx.service), "ack").inc()


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


def status_of(
    job: DeliveryJob, results: list[RcptResult], site_failure: Outcome | None = None
) -> DeliveryStatus:
    hop = site_failure if site_failure is not None and site_failure.status == "deferred" else None
    return DeliveryStatus(job.queue_id, job.attempt, job.transport, job.nexthop, results,
                          attempt_id=job.attempt_id, token=job.token, whole=job.whole,
                          destination=job.destination, job=job.key,
                          hop_dsn=hop.dsn if hop else "", hop_reason=hop.reason if hop else "")


async def attempt_is_current(queue: QueueFile, job: DeliveryJob) -> bool:
    """The message is still queued, this job's attempt is its current one, and the
    job's recipients still wait for it."""
    got = await queue.get(job.queue_id)
    if got is None:
        return False
    entry, _ = got
    if entry.attempt_id != job.attempt_id:
        return False
    return any(
        i < len(entry.recipients) and not entry.recipients[i].final for i in job.indexes
    )


async def report_crash(ctx: ServiceContext, msg: Msg) -> None:
    """A job that went to the corrupt queue will never report: defer its
    recipients as Postfix's qmgr does when an agent dies ("4.3.0 unknown mail
    transport error"), so the message is retried with backoff instead of
    staying active. An undecodable job names no recipients: nothing to do."""
    try:
        job = WorkBus.read_job(msg)
    except CodecError:
        return
    stats = Stats.for_job(job)
    results = []
    for index, rcpt in zip(job.indexes, job.recipients, strict=False):
        log_delivery(job.queue_id, rcpt, "none", stats, CRASH_DSN, "deferred", CRASH_TEXT,
                     transport=job.transport)
        results.append(RcptResult(index, "deferred", CRASH_DSN, CRASH_TEXT, "none"))
    await ctx.work.report(status_of(job, results, Outcome("deferred", CRASH_DSN, CRASH_TEXT)))


async def serve_jobs(ctx: ServiceContext, deliver: Deliver, *, concurrency: int = 64) -> None:
    """Consume ``postbus.deliver.<service>`` until the service stops."""

    async def handler(msg: Msg) -> None:
        await handle_job(ctx, msg, deliver)

    async def crashed(msg: Msg) -> None:
        await report_crash(ctx, msg)

    await consume(
        ctx,
        stream=WORK_STREAM,
        subject=deliver_filter(ctx.service),
        durable=deliver_consumer(ctx.service),
        handler=handler,
        concurrency=concurrency,
        on_poison=crashed,
    )
