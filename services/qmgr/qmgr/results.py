"""Recording delivery results and ending attempts (≈ qmgr_deliver.c, qmgr_active.c's
qmgr_active_done()).

The qmgr alone changes a message's state: agents report, this module
records. Any qmgr replica can take any report: what to do is derived from
the queue file and the report, nothing else.

The common case costs one "done" mark, written with others in one batch: a
report for a job that held every recipient (``whole``), all sent, means the
message is done. Otherwise the
entry is read (as received when nothing was written yet: then every
recipient was handed out in the first attempt, and is still ``pending``
there), the results recorded, and
when no recipient is active any more the attempt ends: the message is
removed (with a notice for what bounced), deferred with Postfix's backoff
and a timer, or left on hold. Then the trigger or wake-up that held the
attempt open is acknowledged.
"""

from __future__ import annotations

import logging
import time

from nats.aio.msg import Msg

from postbus import events, metrics
from postbus.queue.entry import DeliveryStatus, QueueEntry
from postbus.queue.file import QueueConflict
from postbus.service import ServiceContext
from qmgr import notices as notice_rules
from qmgr.bounce import wire
from qmgr.defer import backoff

log = logging.getLogger("postbus.qmgr")

#: The counters of removals by reason (labels() costs more than the count, per message).
REMOVED = {reason: metrics.qmgr_messages_removed.labels(reason)
           for reason in ("delivered", "bounced")}


class Recorder:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.notices = wire(ctx)

    async def on_status(self, msg: Msg) -> None:
        status = DeliveryStatus.decode(msg.data)
        if status.whole and all(r.status == "sent" for r in status.results):
            await self.remove(status.queue_id, delivered=True, bucket=status.bucket)
            await self.ctx.work.end_attempt(status.token)
        else:
            await self.record(status)
        await msg.ack()

    async def record(self, status: DeliveryStatus) -> None:
        queue = self.ctx.queue
        for _ in range(50):
            got = await queue.get(status.queue_id, status.bucket)
            if got is None:
                return  # removed meanwhile: a duplicate or late report
            entry, revision = got
            if revision == 0:
                entry.attempts = max(entry.attempts, 1)  # the first attempt wrote nothing
            if not entry.record(status):
                return
            try:
                await self.conclude(entry, revision, status.token)
                return
            except QueueConflict:
                continue
        raise QueueConflict(status.queue_id)

    async def conclude(self, entry: QueueEntry, revision: int, token: str) -> None:
        """Write what an attempt has done so far; end it when nothing is active.

        At the end of an attempt, as Postfix's qmgr and bounce(8): expire what
        outlived its queue lifetime, send the notices for recipients this
        attempt settled (non-delivery, and success where NOTIFY asked), a
        delay warning when one is due, then remove the message or set its
        retry. Notices go out before the entry records them: a crash in
        between repeats a notice rather than losing it.
        QueueConflict when the entry changed since it was read (read again)."""
        queue = self.ctx.queue
        if entry.pending():
            await queue.update(entry, revision)  # other jobs of this attempt still run
            return
        now = time.time()
        self._defer_or_expire(entry, now)
        await self._notify(entry, now)
        if entry.finished():
            await self.remove(entry.queue_id, delivered=entry.all_sent(), bucket=entry.bucket)
        elif entry.queue == "deferred":
            await queue.update(entry, revision)  # out of its time bucket, if in one
            await queue.set_timer(entry.queue_id, entry.next_attempt, entry.attempt_id,
                                  entry.bucket)
            await self.ctx.work.event("deferred", entry.queue_id,
                                      next_attempt=entry.next_attempt)
        else:
            await queue.update(entry, revision)
        await self.ctx.work.end_attempt(token)

    async def _notify(self, entry: QueueEntry, now: float) -> None:
        failed = [r for r in entry.recipients
                  if r.state in ("bounced", "expired") and not r.reported]
        sent = [r for r in entry.recipients
                if r.state == "sent" and not r.reported and notice_rules.wants(r, "SUCCESS")]
        if mine := [r for r in failed if not r.bounce_to]:
            await self.notices.failure(entry, mine)
        for rcpt in failed:  # one notice each to an owner- alias, as local's bounce_one()
            if rcpt.bounce_to:
                await self.notices.failure(entry, [rcpt], to=rcpt.bounce_to)
        if sent:
            await self.notices.success(entry, [(r, notice_rules.default_action(r)) for r in sent])
        for rcpt in failed + sent:
            rcpt.reported = True
        if entry.queue == "deferred" and notice_rules.delay_due(self.ctx.cfg, entry, now):
            await self.notices.delay(entry)
            entry.warned = True

    def _defer_or_expire(self, entry: QueueEntry, now: float) -> None:
        """The attempt is over with recipients deferred: expire them (keeping the last
        deferral's status and words, as Postfix), or set the retry."""
        if entry.finished() or entry.queue == "hold":
            return  # postsuper -h: stays on hold until released
        lifetime_param = "bounce_queue_lifetime" if not entry.sender else "maximal_queue_lifetime"
        if now - entry.arrival_time >= self.ctx.cfg.time(lifetime_param):
            for rcpt in entry.recipients:
                if rcpt.state == "deferred":
                    rcpt.state = "expired"
                    self.ctx.work.record(events.for_recipient(entry, rcpt, now))
            return
        entry.queue = "deferred"
        entry.next_attempt = now + backoff(self.ctx.cfg, entry.arrival_time, now)

    async def remove(self, queue_id: str, *, delivered: bool, bucket: str) -> None:
        """Forget a message whose every recipient is final (≈ qmgr's "removed")."""
        await self.ctx.queue.remove(queue_id, bucket=bucket)
        log.info("%s: removed", queue_id)
        reason = "delivered" if delivered else "bounced"
        REMOVED[reason].inc()
        self.ctx.work.record(events.Removed(queue_id=queue_id, reason=reason))
