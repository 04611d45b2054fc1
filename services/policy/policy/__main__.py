"""policy: a Postfix policy delegation server (≈ SMTPD_POLICY_README) with
greylisting (postgrey's), rate limits and SPF (policyd-spf's), configured by
the ``postbus_policy_*`` parameters of main.cf. Real Postfix can use it:
``check_policy_service inet:host:port``. State is in Redis, so replicas
behind one address answer alike (several processes of one master.cf line share its
port). :mod:`policy.server` serves connections,
:mod:`policy.checks` composes the checks.
"""

from __future__ import annotations

import asyncio

from postbus import policy_protocol as proto
from postbus.master_plan import process_count
from postbus.service import ServiceContext, run

from .server import Server


async def main(ctx: ServiceContext) -> None:
    entry = ctx.master_entry()
    address = entry.listen_address() if entry else None
    if address is None:
        raise SystemExit(f"policy: fatal: service {ctx.service} needs an inet address")
    host, port = address
    server = Server(ctx.cfg)
    ctx.on_reload(server.reconfigure)
    # the processes of one master.cf line (maxproc > 1) share its port (SO_REUSEPORT)
    assert entry is not None
    listener = await asyncio.start_server(
        server.session, host or "127.0.0.1", port,
        limit=max(server.max_line, server.max_request, proto.MAX_LINE),
        reuse_port=process_count(entry) > 1 or None)
    ctx.ready = True
    async with listener:
        await ctx.stopping.wait()
        server.close_all()


if __name__ == "__main__":
    run("policy", main, needs_bus=False)
