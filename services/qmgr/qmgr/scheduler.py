"""Routing an attempt and cutting it into jobs (≈ qmgr_message.c + qmgr_entry.c).

Recipients still to be delivered are resolved to transport:nexthop
(trivial-rewrite) and grouped per destination into jobs of at most
``<transport>_destination_recipient_limit`` recipients, published for the
delivery agents (each passes its destination's window before connecting:
:mod:`postbus.schedule.gate`). A recipient the qmgr settles itself (``error:``,
``discard:``, ``retry:``, a lookup that failed) never becomes a job.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from postbus.config.loader import Config
from postbus.queue.entry import DeliveryJob, QueueEntry, Recipient
from postbus.schedule.windows import Limits, destination_name
from postbus.service import ServiceContext
from qmgr.notices import wants
from qmgr.resolve import Route, RouteResolver

log = logging.getLogger("postbus.qmgr")

OPEN_STATES = ("pending", "active", "deferred")  # what a new attempt takes up


class Scheduler:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.reconfigure(ctx.cfg)
        ctx.on_reload(self.reconfigure)

    def reconfigure(self, cfg: Config) -> None:
        self.resolver = RouteResolver(cfg)
        self.lease = cfg.time("postbus_delivery_lease")
        self.delimiter = cfg.get("recipient_delimiter")
        self.cfg = cfg
        self._limits: dict[str, Limits] = {}

    def limits(self, transport: str) -> Limits:
        if transport not in self._limits:
            self._limits[transport] = Limits.of(self.cfg, transport)
        return self._limits[transport]

    async def route(self, entry: QueueEntry) -> list[Recipient]:
        """Resolve every open recipient and mark it active (a job will carry it) or
        settle it (error:, discard:, retry:); returns those the qmgr settled."""
        if entry.filter:  # a content filter overrides the address resolver
            routes = {i: self.resolver.filtered(entry.filter, r.address)
                      for i, r in enumerate(entry.recipients) if r.state in OPEN_STATES}
        else:
            routes = {
                i: await self.resolver.route(r.address, entry.sender)
                for i, r in enumerate(entry.recipients)
                if r.state in OPEN_STATES
            }
        for failure in dict.fromkeys(r.failure for r in routes.values() if r.failure):
            log.warning("%s: %s", entry.queue_id, failure)  # once per message
        return [entry.recipients[i] for i, route in routes.items() if _apply(entry, i, route)]

    def jobs(self, entry: QueueEntry, token: str, *, recheck: bool = False) -> list[DeliveryJob]:
        """One job per destination and ``<transport>_destination_recipient_limit``,
        for the active recipients."""
        groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for i, rcpt in enumerate(entry.recipients):
            if rcpt.state == "active":
                transport, _, nexthop = rcpt.transport.partition(":")
                name = destination_name(self.limits(transport), transport, nexthop, rcpt.address,
                                        self.delimiter)
                groups[(transport, nexthop, name)].append(i)
        now = time.time()
        jobs = []
        for (transport, nexthop, name), indexes in groups.items():
            limit = self.limits(transport).recipient_limit
            for start in range(0, len(indexes), limit):
                chunk = indexes[start : start + limit]
                jobs.append(DeliveryJob(
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
                    bucket=entry.bucket,
                    queued_time=now,
                    active_time=entry.last_attempt or now,
                    env_id=entry.env_id,
                    ret=entry.ret,
                    # all recipients, none asking for a success notice: the one job
                    # whose "all sent" ends the message without reading the entry
                    whole=len(chunk) == len(entry.recipients) and not any(
                        wants(entry.recipients[i], "SUCCESS") for i in chunk),
                    attempt_id=entry.attempt_id,
                    token=token,
                    recheck=recheck,
                    destination=name,
                    client_name=entry.client_name,
                    client_addr=entry.client_addr,
                    client_port=entry.client_port,
                    helo=entry.helo,
                    protocol=entry.protocol,
                    log_ident=entry.log_ident or entry.queue_id,
                    rewrite_context=entry.rewrite_context,
                    smtputf8=entry.smtputf8,
                ))
        return jobs

    async def hand_out(self, jobs: list[DeliveryJob]) -> None:
        for job in jobs:
            await self.ctx.work.submit_job(job)


def _apply(entry: QueueEntry, index: int, route: Route) -> bool:
    """Record where a recipient goes; True when the qmgr settled it itself."""
    rcpt = entry.recipients[index]
    if route.recipient:
        rcpt.address = route.recipient  # delivered as resolved, as Postfix's qmgr does
    rcpt.transport = f"{route.transport}:{route.nexthop}"
    if route.transport == "discard":
        rcpt.state, rcpt.dsn, rcpt.reason = "sent", "2.0.0", route.nexthop or "discarded"
    elif route.transport == "error":
        rcpt.state, rcpt.dsn, rcpt.reason = "bounced", route.dsn or "5.0.0", route.text
    elif route.transport == "retry":
        rcpt.state, rcpt.dsn, rcpt.reason = "deferred", route.dsn or "4.0.0", route.text
    else:
        rcpt.state = "active"
        return False
    return True
