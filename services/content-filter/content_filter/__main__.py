"""content-filter: the after-queue content filter on the bus (≈ content_filter /
FILTER with a re-injecting filter such as amavisd, OpenDKIM or rspamd).

It is the delivery agent of every master.cf transport whose command is
``content-filter``: it takes that transport's jobs off the bus as the other
agents do (:mod:`postbus.job_loop`), so it scales out as replicas; each job
is verified, scanned, signed and re-injected by :mod:`content_filter.agent`.
"""

from __future__ import annotations

import asyncio

from content_filter.agent import FilterAgent
from postbus.config.loader import Config
from postbus.delivery import Stats
from postbus.job_loop import serve_jobs
from postbus.queue.entry import DeliveryJob, RcptResult
from postbus.service import ServiceContext, run


async def main(ctx: ServiceContext) -> None:
    agents = [FilterAgent(ctx.cfg, ctx.queue)]
    closing: set[asyncio.Task[None]] = set()

    def configure(cfg: Config) -> None:
        """On reload: new jobs use the new tables, keys and scanner settings; the old
        scanner client closes once the scans it may still carry have timed out."""
        old, agents[0] = agents[0], FilterAgent(cfg, ctx.queue)

        async def retire() -> None:
            await asyncio.sleep(old.scanner.timeout + 1)
            await old.close()

        task = asyncio.get_running_loop().create_task(retire())
        closing.add(task)
        task.add_done_callback(closing.discard)

    async def deliver(job: DeliveryJob, content: bytes, stats: Stats) -> list[RcptResult]:
        return await agents[0].deliver(job, content, stats)

    ctx.on_reload(configure)
    try:
        await serve_jobs(ctx, deliver)
    finally:
        await agents[0].close()


if __name__ == "__main__":
    run("content-filter", main)
