"""policy: a Postfix policy delegation server (≈ SMTPD_POLICY_README).

This first version speaks the protocol and answers ``DUNNO`` (no opinion)
to every request; greylisting, rate limits and SPF come with the policy
issue. Real Postfix can already use it: ``check_policy_service inet:host:port``.
"""

from __future__ import annotations

import asyncio
import logging

from postbus.service import ServiceContext, run

log = logging.getLogger("postbus.policy")


async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One client connection: any number of requests, each ended by an empty line."""
    try:
        attrs: dict[str, str] = {}
        while line := await reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text:
                name, _, value = text.partition("=")
                attrs[name] = value
                continue
            writer.write(b"action=DUNNO\n\n")
            await writer.drain()
            attrs.clear()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(ctx: ServiceContext) -> None:
    entry = ctx.master_entry()
    address = entry.listen_address() if entry else None
    if address is None:
        raise SystemExit(f"policy: fatal: service {ctx.service} needs an inet address")
    host, port = address
    server = await asyncio.start_server(session, host or "127.0.0.1", port)
    ctx.ready = True
    async with server:
        await ctx.stopping.wait()


if __name__ == "__main__":
    run("policy", main, needs_bus=False)
