"""The qmgr's present call into the notices: one non-delivery notice per message,
when every recipient is final (:mod:`qmgr.bouncer` does the work).

This adapter wires :class:`qmgr.bouncer.Bouncer` to the QueueStore and keeps
the ``notified`` mark; the queue core calls the notices directly once it
sends them at the end of each attempt, as Postfix does.
"""

from __future__ import annotations

from collections.abc import Callable

from postbus.queue.entry import QueueEntry
from postbus.service import ServiceContext
from qmgr import bouncer


def wire(ctx: ServiceContext) -> bouncer.Bouncer:
    """A bouncer.Bouncer that queues through this process's QueueStore."""

    async def enqueue(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        long_ids = ctx.cfg.bool("enable_long_queue_ids")
        return await ctx.queue.enqueue(entry, b"", long_ids, build=build)

    async def content(entry: QueueEntry) -> bytes:
        return await ctx.queue.content(entry.queue_id, entry.chunks)

    return bouncer.Bouncer(lambda: ctx.cfg, enqueue, content)


class Bouncer:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.notices = wire(ctx)

    async def notify(self, entry: QueueEntry) -> None:
        """Queue the non-delivery notices once per message."""
        if entry.notified:
            return
        await self.notices.failure(entry)

        def mark(e: QueueEntry) -> bool:
            e.notified = True
            return True

        await self.ctx.queue.modify(entry.queue_id, mark)
