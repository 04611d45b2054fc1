"""qmgr: the queue manager role (≈ Postfix qmgr(8) + trivial-rewrite(8))."""

from __future__ import annotations

import asyncio

from postbus.bus import subjects as s
from postbus.bus.consumer import consume
from postbus.service import ServiceContext, run
from qmgr.active import QueueManager
from qmgr.gauges import refresh_gauges


async def main(ctx: ServiceContext) -> None:
    qmgr = QueueManager(ctx)
    await asyncio.gather(
        refresh_gauges(ctx),
        consume(ctx, stream=s.QUEUE_STREAM, subject=s.MSG_TRIGGER_FILTER,
                durable=s.QMGR_INCOMING_CONSUMER, handler=qmgr.on_incoming),
        consume(ctx, stream=s.STATUS_STREAM, subject=f"{s.ROOT}.status.*",
                durable=s.QMGR_STATUS_CONSUMER, handler=qmgr.on_status),
        consume(ctx, stream=s.DEFER_STREAM, subject=f"{s.ROOT}.defer.*",
                durable=s.QMGR_DEFER_CONSUMER, handler=qmgr.on_wakeup,
                on_poison=qmgr.after_bad_wakeup),
    )


def entry() -> None:
    run("qmgr", main)


if __name__ == "__main__":
    entry()
