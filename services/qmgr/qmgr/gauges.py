"""The queue-size gauges (postbus_queue_messages{queue}), as showq would count.

Every ``postbus_queue_scan_interval`` one qmgr replica's view is refreshed
from the queue itself. Each replica sets the same values, so any of them
can be scraped; a scan reads every entry, which is fine up to some tens of
thousands of queued messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from postbus import metrics
from postbus.bus import subjects as s
from postbus.queue.entry import QUEUE_NAMES
from postbus.service import ServiceContext

log = logging.getLogger("postbus.qmgr")


async def count_queues(ctx: ServiceContext) -> Counter[str]:
    counts: Counter[str] = Counter()
    async for entry in ctx.queue.entries():
        counts[entry.queue] += 1
    info = await ctx.queue.js.stream_info(s.CORRUPT_STREAM, subjects_filter=s.CORRUPT_SUBJECTS)
    counts["corrupt"] = len(info.state.subjects or {})  # one subject per corrupt message
    return counts


async def refresh_gauges(ctx: ServiceContext) -> None:
    while not ctx.stopping.is_set():
        try:
            counts = await count_queues(ctx)
            for name in QUEUE_NAMES:
                metrics.queue_messages.labels(name).set(counts.get(name, 0))
        except Exception as exc:  # the bus may be restarting; try again next time
            log.debug("queue gauges not refreshed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                ctx.stopping.wait(), ctx.cfg.time("postbus_queue_scan_interval")
            )
