"""The notices, wired to this process's queue file (:mod:`qmgr.bouncer` does the work;
:mod:`qmgr.results` calls it at the end of each attempt, as Postfix's qmgr)."""

from __future__ import annotations

from collections.abc import Callable

from postbus.queue.entry import QueueEntry
from postbus.service import ServiceContext
from qmgr import bouncer


def wire(ctx: ServiceContext) -> bouncer.Bouncer:
    """A bouncer.Bouncer that queues through this process's queue file."""

    async def enqueue(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        long_ids = ctx.cfg.bool("enable_long_queue_ids")
        return await ctx.queue.enqueue(entry, b"", long_ids, build=build)

    async def content(entry: QueueEntry) -> bytes:
        return await ctx.queue.content(entry.queue_id, entry.chunks)

    return bouncer.Bouncer(lambda: ctx.cfg, enqueue, content)
