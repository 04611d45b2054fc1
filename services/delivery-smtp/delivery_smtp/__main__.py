"""The smtp and lmtp delivery agents (≈ Postfix smtp(8)).

One process serves the master.cf service it is started as (``-n relay``
serves transport ``relay``); the master.cf command (``smtp`` or ``lmtp``)
decides the protocol and which ``smtp_*``/``lmtp_*`` parameters apply.
"""

from __future__ import annotations

import asyncio

from delivery_smtp.agent import agent, build
from postbus.delivery import serve_jobs
from postbus.service import ServiceContext, run


async def main(ctx: ServiceContext) -> None:
    connector = build(ctx.cfg, ctx.service)
    sweeper = asyncio.create_task(connector.cache.run(ctx.stopping))
    try:
        await serve_jobs(ctx, agent(ctx.cfg, ctx.service, connector))
    finally:
        ctx.stopping.set()
        await sweeper


if __name__ == "__main__":
    run("smtp", main)
