"""The queue-size gauges (postbus_queue_messages{queue}), as showq would count.

Every ``postbus_queue_scan_interval`` each qmgr replica sets the gauges
from figures JetStream keeps anyway: its consumers' pending counts and the
shared deferred and hold counters that every entry write moves
(:mod:`postbus.queue.gauges`). That reads a handful of numbers, however
large the queue, so every replica can be scraped and all show the same.

Once an hour, and at once when the counters are missing (a new or
restarted memory stream), one replica, whichever claims it first, recounts
the written entries and corrects the counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from postbus import metrics
from postbus.queue import gauges
from postbus.queue.entry import QUEUE_NAMES
from postbus.service import ServiceContext

log = logging.getLogger("postbus.qmgr")


async def refresh(ctx: ServiceContext, claimed: set[str]) -> None:
    """Set the gauges once; recount first when this replica claims this hour's
    recount. Missing counters are claimed again every time until someone has
    recounted (a new stream forgets the claims of the old one)."""
    assert ctx.nc is not None
    js = ctx.queue.js
    sizes, missing = await gauges.counts(ctx.nc, js)
    key = gauges.slot()
    if key not in claimed or missing:
        claimed.add(key)
        if await gauges.claim(js, key):
            await gauges.recount(js)
            sizes, _ = await gauges.counts(ctx.nc, js)
    for name in QUEUE_NAMES:
        metrics.queue_messages.labels(name).set(sizes.get(name, 0))


async def refresh_gauges(ctx: ServiceContext) -> None:
    claimed: set[str] = set()
    while not ctx.stopping.is_set():
        try:
            await refresh(ctx, claimed)
        except Exception as exc:  # the bus may be restarting; try again next time
            log.debug("queue gauges not refreshed: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                ctx.stopping.wait(), ctx.cfg.time("postbus_queue_scan_interval")
            )
