"""maps-api: lookup tables over HTTP (FastAPI under uvicorn, in the service skeleton)."""

from __future__ import annotations

import asyncio

import uvicorn

from maps_api.app import create_app
from postbus.service import ServiceContext, run


async def main(ctx: ServiceContext) -> None:
    entry = ctx.cfg.master_entry(ctx.service)
    address = entry.listen_address() if entry else None
    if address is None:
        raise SystemExit(f"maps-api: fatal: service {ctx.service} needs an inet address")
    host, port = address
    config = uvicorn.Config(
        create_app(), host=host or "127.0.0.1", port=port, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    ctx.ready = True
    await ctx.stopping.wait()
    server.should_exit = True
    await task


if __name__ == "__main__":
    run("maps-api", main, needs_bus=False)
