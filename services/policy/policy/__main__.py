"""policy: a Postfix policy delegation server (≈ SMTPD_POLICY_README).

This first version speaks the protocol and answers ``DUNNO`` (no opinion)
to every request; greylisting, rate limits and SPF come with the policy
issue. Real Postfix can already use it: ``check_policy_service inet:host:port``.

Input is bounded by :mod:`postbus.policy_protocol` (line length, attribute
count, request size); a client that stays silent between requests for
``postbus_policy_max_idle`` is disconnected, one that takes longer than
``postbus_policy_timeout`` to finish a request gets a warning and is
disconnected, as is any client that breaks the protocol.
"""

from __future__ import annotations

import asyncio
import logging

from postbus import policy_protocol as proto
from postbus.config.loader import Config
from postbus.logging import peer_name
from postbus.service import ServiceContext, run

log = logging.getLogger("postbus.policy")

MAX_IDLE = "postbus_policy_max_idle"
TIMEOUT = "postbus_policy_timeout"


class Server:
    """The per-connection loop, with the timeouts of the configuration (reloadable)."""

    def __init__(self, cfg: Config) -> None:
        self.idle_timeout = self.timeout = 0.0
        self.writers: set[asyncio.StreamWriter] = set()
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> None:
        self.idle_timeout = cfg.time(MAX_IDLE)
        self.timeout = cfg.time(TIMEOUT)

    def close_all(self) -> None:
        """Disconnect every client (at stop: a connection may be idle for minutes)."""
        for writer in list(self.writers):
            writer.close()

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: any number of requests, each ended by an empty line."""
        peer = peer_name(writer)
        self.writers.add(writer)
        try:
            while True:
                attrs = await proto.read_attributes(
                    reader, idle_timeout=self.idle_timeout, timeout=self.timeout, peer=peer
                )
                if attrs is None:
                    return
                writer.write(proto.encode_reply("DUNNO"))
                await writer.drain()
        except proto.PolicyIdle as exc:
            log.info("%s", exc)
        except proto.PolicyProtocolError as exc:
            log.warning("%s", exc)
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


async def main(ctx: ServiceContext) -> None:
    entry = ctx.master_entry()
    address = entry.listen_address() if entry else None
    if address is None:
        raise SystemExit(f"policy: fatal: service {ctx.service} needs an inet address")
    host, port = address
    server = Server(ctx.cfg)
    ctx.on_reload(server.reconfigure)
    listener = await asyncio.start_server(
        server.session, host or "127.0.0.1", port, limit=proto.MAX_LINE
    )
    ctx.ready = True
    async with listener:
        await ctx.stopping.wait()
        server.close_all()


if __name__ == "__main__":
    run("policy", main, needs_bus=False)
