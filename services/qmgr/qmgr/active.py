"""Taking messages in, handing out deliveries, settling results (≈ qmgr_active.c).

Three kinds of bus work arrive here, each from its own durable consumer so
any number of qmgr replicas can share them:

* new mail: chunk 0 of a message's content (the entry is already stored);
* delivery results from the delivery agents;
* wake-ups for deferred mail whose next attempt is due.

Every change to an entry is a compare-and-set on the queue bucket, so
replicas never overwrite each other. What to do next is always derived
from the stored state, which makes every handler safe to run twice: a
killed qmgr is restarted and JetStream hands it the same work again.
"""

from __future__ import annotations

import logging
import time

from nats.aio.msg import Msg

from postbus import metrics
from postbus.bus import subjects as s
from postbus.queue.entry import CodecError, DeliveryStatus, QueueEntry
from postbus.queue.store import QueueConflict, QueueStore
from postbus.service import ServiceContext
from qmgr.bounce import Bouncer
from qmgr.defer import backoff
from qmgr.scheduler import Scheduler

log = logging.getLogger("postbus.qmgr")

def _needs_notice(entry: QueueEntry) -> bool:
    return bool(entry.sender) and any(r.state in ("bounced", "expired") for r in entry.recipients)


class QueueManager:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.queue
        self.scheduler = Scheduler(ctx)
        self.bouncer = Bouncer(ctx)

    # -- new mail ----------------------------------------------------------------

    async def on_incoming(self, msg: Msg) -> None:
        queue_id = s.queue_id_of(msg.subject)
        got = QueueStore.trigger_entry(msg) or await self.store.get(queue_id)
        if got is None:
            await msg.ack()  # removed meanwhile (delivered, or postsuper -d)
            return
        entry, _ = got
        if entry.queue == "incoming":
            log.info(
                "%s: from=<%s>, size=%d, nrcpt=%d (queue active)",
                queue_id, entry.sender, entry.size, len(entry.recipients),
            )
            metrics.qmgr_messages_inserted.inc()
        if entry.queue in ("incoming", "active"):
            content = msg.data if entry.chunks == 1 else None
            await self.start_attempt(queue_id, got, content)
        await msg.ack()

    async def start_attempt(
        self,
        queue_id: str,
        got: tuple[QueueEntry, int] | None = None,
        content: bytes | None = None,
    ) -> None:
        entry = await self.scheduler.activate(queue_id, got, content)
        if entry is None or entry.pending():
            return
        # every recipient was settled by the qmgr itself (error:, discard:, retry:)
        def settle(e: QueueEntry) -> bool:
            self._settle(e)
            return True

        entry = await self.store.modify(queue_id, settle)
        if entry is not None:
            await self.finish(entry)

    # -- results -----------------------------------------------------------------

    async def on_status(self, msg: Msg) -> None:
        status = DeliveryStatus.decode(msg.data)
        for _ in range(50):
            got = await self.store.get(status.queue_id)
            if got is None:
                break  # already removed: a duplicate report
            entry, revision = got
            changed = entry.record(status)
            if changed and not entry.pending():
                self._settle(entry)
            # A message whose every recipient is final and that needs no notice
            # is removed at once: writing its last state first would only be
            # thrown away (no other report can be outstanding, since no
            # recipient is still active).
            done = entry.finished() and not _needs_notice(entry)
            if changed and not done:
                try:
                    await self.store.update(entry, revision)
                except QueueConflict:
                    continue
            if not entry.pending():
                await self.finish(entry)
            break
        await msg.ack()

    def _settle(self, entry: QueueEntry) -> None:
        """All recipients of this attempt are done: defer or expire the rest."""
        deferred = [r for r in entry.recipients if r.state == "deferred"]
        if not deferred:
            return
        if entry.queue == "hold":
            return  # postsuper -h: stays on hold until released
        now = time.time()
        lifetime_param = "bounce_queue_lifetime" if not entry.sender else "maximal_queue_lifetime"
        if now - entry.arrival_time >= self.ctx.cfg.time(lifetime_param):
            for rcpt in deferred:
                rcpt.state = "expired"
                rcpt.reason = f"message expired: {rcpt.reason}" if rcpt.reason else "expired"
            return
        entry.queue = "deferred"
        entry.next_attempt = now + backoff(self.ctx.cfg, entry.arrival_time, now)

    async def finish(self, entry: QueueEntry) -> None:
        """Act on a settled entry: wake it later, or notify and remove it."""
        if entry.queue == "hold" and not entry.finished():
            return
        if entry.queue == "deferred":
            await self.store.wake_later(entry)
            await self.store.event("deferred", entry.queue_id, next_attempt=entry.next_attempt)
            return
        if not entry.finished():
            return
        if any(r.state in ("bounced", "expired") for r in entry.recipients):
            await self.bouncer.notify(entry)
        await self.store.retire(entry.queue_id, entry.all_sent())

    # -- deferred mail -------------------------------------------------------------

    async def on_wakeup(self, msg: Msg) -> None:
        queue_id, attempts = QueueStore.read_wakeup(msg.data)
        got = await self.store.get(queue_id)
        if got is None:
            await msg.ack()
            return
        entry, _ = got
        if entry.queue != "deferred" or entry.attempts != attempts:
            await msg.ack()  # stale: released, requeued, held or already retried
            return
        wait = entry.next_attempt - time.time()
        if wait > 0:
            await msg.nak(delay=wait)
            return
        await self.start_attempt(entry.queue_id, got)
        await msg.ack()

    async def after_bad_wakeup(self, msg: Msg) -> None:
        """A wake-up that went to the corrupt queue because it could not be read
        must not leave its message deferred forever: leave a good one. (One that
        was read but whose handling failed is not replaced: that would loop.)"""
        try:
            QueueStore.read_wakeup(msg.data)
            return
        except CodecError:
            pass
        queue_id = s.subject_queue_id(msg.subject)
        got = await self.store.get(queue_id) if queue_id else None
        if got is not None and got[0].queue == "deferred":
            await self.store.wake_later(got[0], now=True)
