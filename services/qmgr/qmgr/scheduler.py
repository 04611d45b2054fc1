"""Starting a delivery attempt: resolve, group, hand out (≈ qmgr_message.c + qmgr_entry.c).

Recipients are resolved to transport:nexthop (trivial-rewrite), grouped per
next hop into jobs of at most ``default_destination_recipient_limit``
recipients, recorded in the entry (compare-and-set), and only then
published. Job IDs are deterministic, so publishing the same attempt again
after a crash is de-duplicated by JetStream.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from postbus.config.loader import Config
from postbus.queue.entry import DeliveryJob, QueueEntry
from postbus.queue.store import QueueConflict
from postbus.service import ServiceContext
from qmgr.resolve import Route, RouteResolver

log = logging.getLogger("postbus.qmgr")

LOCAL_TRANSPORTS = {"error", "discard", "retry"}
INLINE_MAX = 256 * 1024  # content up to this size rides along with its jobs


class Scheduler:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.queue
        self.reconfigure(ctx.cfg)
        ctx.on_reload(self.reconfigure)

    def reconfigure(self, cfg: Config) -> None:
        self.resolver = RouteResolver(cfg)
        self.limit = max(1, cfg.int("default_destination_recipient_limit"))

    async def activate(
        self,
        queue_id: str,
        got: tuple[QueueEntry, int] | None = None,
        content: bytes | None = None,
    ) -> QueueEntry | None:
        """Begin a new attempt (incoming or due deferred mail), or re-send the
        jobs of an attempt that is already active (after a restart).
        ``got`` is the entry and revision when the caller has just read them."""
        got = got or await self.store.get(queue_id)
        if got is None:
            return None
        entry, revision = got
        if entry.queue == "active":
            await self._publish(entry, content)
            return entry
        routes = {
            i: await self.resolver.route(r.address)
            for i, r in enumerate(entry.recipients)
            if r.state in ("pending", "deferred")
        }
        for failure in dict.fromkeys(r.failure for r in routes.values() if r.failure):
            log.warning("%s: %s", queue_id, failure)  # once per message, not per recipient
        attempt = entry.attempts

        def start(e: QueueEntry) -> bool:
            if e.attempts != attempt or e.queue not in ("incoming", "deferred"):
                return False
            e.queue = "active"
            e.attempts += 1
            e.last_attempt = time.time()
            for i, route in routes.items():
                self._apply(e, i, route)
            return True

        started: QueueEntry | None = entry
        if not start(entry):
            return entry
        try:
            await self.store.update(entry, revision)
        except QueueConflict:
            started = await self.store.modify(queue_id, start)
        if started is None or started.attempts != attempt + 1:
            return started
        await self.store.event("active", queue_id, attempt=started.attempts)
        if not started.pending():
            return started  # nothing left for agents: the caller settles it
        await self._publish(started, content)
        return started

    @staticmethod
    def _apply(entry: QueueEntry, index: int, route: Route) -> None:
        rcpt = entry.recipients[index]
        if route.recipient:
            rcpt.address = route.recipient  # delivered as resolved, as Postfix's qmgr does
        rcpt.transport = f"{route.transport}:{route.nexthop}"
        if route.transport == "discard":
            rcpt.state, rcpt.dsn, rcpt.reason = "sent", "2.0.0", route.nexthop or "discarded"
        elif route.transport == "error":
            rcpt.state, rcpt.dsn = "bounced", route.dsn or "5.0.0"
            rcpt.reason = route.text
        elif route.transport == "retry":
            rcpt.state, rcpt.dsn = "deferred", route.dsn or "4.0.0"
            rcpt.reason = route.text
        else:
            rcpt.state = "active"

    async def _publish(self, entry: QueueEntry, content: bytes | None = None) -> None:
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, rcpt in enumerate(entry.recipients):
            if rcpt.state == "active":
                transport, _, nexthop = rcpt.transport.partition(":")
                groups[(transport, nexthop)].append(i)
        now = time.time()
        for (transport, nexthop), indexes in groups.items():
            for start in range(0, len(indexes), self.limit):
                chunk = indexes[start : start + self.limit]
                job = DeliveryJob(
                    queue_id=entry.queue_id,
                    transport=transport,
                    nexthop=nexthop,
                    sender=entry.sender,
                    recipients=[entry.recipients[i] for i in chunk],
                    indexes=chunk,
                    attempt=entry.attempts,
                    arrival_time=entry.arrival_time,
                    size=entry.size,
                    chunks=entry.chunks,
                    queued_time=now,
                    active_time=entry.last_attempt,
                    env_id=entry.env_id,
                    ret=entry.ret,
                    whole=len(chunk) == len(entry.recipients),
                )
                inline = content if content is not None and len(content) <= INLINE_MAX else None
                await self.store.submit_job(job, inline)
