"""maps-api: lookup tables over HTTP, socketmap and tcp_table (≈ proxymap + postmap).

The HTTP address is the master.cf service name (``127.0.0.1:10080 inet ...
maps-api``); the socketmap and tcp_table servers listen on
``postbus_maps_api_socketmap_listen`` and ``postbus_maps_api_tcp_listen``
(empty: not started).  Writes publish change events on the bus.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from maps_api import settings, socketmap, tcp_table
from maps_api.app import create_app
from maps_api.connections import StreamServer
from maps_api.tables import RedisStore, TableService
from postbus.service import ServiceContext, run


async def main(ctx: ServiceContext) -> None:
    entry = ctx.master_entry()
    address = entry.listen_address() if entry else None
    if address is None:
        raise SystemExit(f"maps-api: fatal: service {ctx.service} needs an inet address")
    tables = TableService(ctx.cfg, RedisStore(ctx.nc))
    servers = []
    for name, param, make in (
        ("socketmap", settings.SOCKETMAP_LISTEN, socketmap.handler),
        ("tcp_table", settings.TCP_LISTEN, tcp_table.handler),
    ):
        listen = settings.parse_listen(ctx.cfg.get(param))
        if listen is not None:
            limit = tcp_table.MAX_REQUEST if name == "tcp_table" else 2**16
            server = StreamServer(name, make(tables), limit=limit)
            await server.start(*listen)
            servers.append(server)
    host, port = address
    config = uvicorn.Config(
        create_app(tables), host=host or "0.0.0.0", port=port,
        log_config=None, access_log=False, lifespan="off",
    )
    http = uvicorn.Server(config)
    # the skeleton owns SIGTERM (graceful drain): uvicorn must not take it over
    http.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(http.serve())
    while not http.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        await task
        raise SystemExit(f"maps-api: fatal: cannot listen on {host}:{port}")
    ctx.ready = True
    await ctx.stopping.wait()
    ctx.ready = False
    http.should_exit = True
    for server in servers:
        await server.stop()
    await task


if __name__ == "__main__":
    run("maps-api", main, needs_bus=True)
