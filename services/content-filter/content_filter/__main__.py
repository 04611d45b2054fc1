"""content-filter: after-queue filtering over the bus (≈ content_filter / FILTER).

This first version runs as a service with health and metrics only; the
content-filter issue adds the bus consumer, checks, DKIM signing and
re-injection.
"""

from __future__ import annotations

from postbus.service import ServiceContext, run


async def main(ctx: ServiceContext) -> None:
    ctx.ready = True
    await ctx.stopping.wait()


if __name__ == "__main__":
    run("content-filter", main)
