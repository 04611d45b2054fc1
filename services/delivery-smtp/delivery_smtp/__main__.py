"""The smtp and lmtp delivery agents (≈ Postfix smtp(8)).

One process serves the master.cf service it is started as (``-n relay``
serves transport ``relay``); the master.cf command (``smtp`` or ``lmtp``)
decides the protocol and which ``smtp_*``/``lmtp_*`` parameters apply.
"""

from __future__ import annotations

import asyncio

from delivery_smtp.agent import agent, build
from postbus.config.loader import Config
from postbus.delivery import Stats
from postbus.job_loop import Deliver, serve_jobs
from postbus.maps.context import redis_client
from postbus.queue.entry import DeliveryJob, RcptResult
from postbus.service import ServiceContext, run
from postbus.tlsrpt.send import daily


async def main(ctx: ServiceContext) -> None:
    sweepers: list[asyncio.Task[None]] = []
    current: list[Deliver] = []

    def configure(cfg: Config) -> None:
        """At start and on reload: new jobs use the new settings."""
        connector = build(cfg, ctx.service)
        sweepers.append(asyncio.create_task(connector.cache.run(ctx.stopping)))
        current[:] = [agent(cfg, ctx.service, connector)]

    async def deliver(job: DeliveryJob, content: bytes, stats: Stats) -> list[RcptResult]:
        return await current[0](job, content, stats)

    configure(ctx.cfg)
    ctx.on_reload(configure)
    if ctx.cfg.bool("postbus_tlsrpt"):  # yesterday's TLS-RPT reports, one replica a day
        sweepers.append(asyncio.create_task(daily(ctx.cfg, redis_client(), ctx.stopping)))
    try:
        await serve_jobs(ctx, deliver)
    finally:
        ctx.stopping.set()
        await asyncio.gather(*sweepers)


if __name__ == "__main__":
    run("smtp", main)
