"""The policy server's connections: requests in, one answer each, bounded input.

Input is bounded by :mod:`postbus.policy_protocol` with this service's
limits (``postbus_policy_line_limit``, ``_attribute_limit``,
``_request_limit``); a client that stays silent between requests for
``postbus_policy_max_idle`` is disconnected, one that takes longer than
``postbus_policy_timeout`` to finish a request gets a warning and is
disconnected, as is any client that breaks the protocol. Requests on one
connection are answered in order; a request is read only after the answer
to the previous one is written (as Postfix's clients wait for it).
"""

from __future__ import annotations

import asyncio
import logging

from postbus import metrics
from postbus import policy_protocol as proto
from postbus.config.loader import Config
from postbus.logging import peer_name

from .checks import Checks
from .store import Store

__all__ = ["Server"]

log = logging.getLogger("postbus.policy")


class Server:
    """The per-connection loop, with the limits and checks of the configuration (reloadable)."""

    def __init__(self, cfg: Config, store: Store | None = None) -> None:
        self.store = store or Store()
        self.writers: set[asyncio.StreamWriter] = set()
        self.checks = Checks(cfg, self.store)
        self._limits(cfg)

    def _limits(self, cfg: Config) -> None:
        self.idle_timeout = cfg.time("postbus_policy_max_idle")
        self.timeout = cfg.time("postbus_policy_timeout")
        self.max_line = cfg.int("postbus_policy_line_limit")
        self.max_attributes = cfg.int("postbus_policy_attribute_limit")
        self.max_request = cfg.size("postbus_policy_request_limit")

    def reconfigure(self, cfg: Config) -> None:
        checks = Checks(cfg, self.store)  # a bad configuration raises: the old one stays
        self._limits(cfg)
        self.checks = checks

    def close_all(self) -> None:
        """Disconnect every client (at stop: a connection may be idle for minutes)."""
        for writer in list(self.writers):
            writer.close()

    async def answer(self, attrs: dict[str, str]) -> str:
        try:
            return await self.checks.answer(attrs)
        except Exception as exc:  # a bug in a check: say so, answer, keep serving
            log.error("error: policy check failed: %s: %s; answering %s",
                      exc.__class__.__name__, exc, self.checks.default_action)
            return self.checks.default_action

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: any number of requests, each ended by an empty line."""
        peer = peer_name(writer)
        self.writers.add(writer)
        requests = metrics.policy_requests
        try:
            while True:
                attrs = await proto.read_attributes(
                    reader, idle_timeout=self.idle_timeout, timeout=self.timeout, peer=peer,
                    max_line=self.max_line, max_attributes=self.max_attributes,
                    max_request=self.max_request)
                if attrs is None:
                    return
                action = await self.answer(attrs)
                try:
                    reply = proto.encode_reply(action)
                except ValueError as exc:  # a value the client sent cannot go back in a reply
                    log.warning("warning: %s; answering DUNNO", exc)
                    reply = proto.encode_reply("DUNNO")
                writer.write(reply)
                requests.inc()
                await writer.drain()
        except proto.PolicyIdle as exc:
            log.info("%s", exc)
        except proto.PolicyProtocolError as exc:
            log.warning("warning: %s", exc)
        except ConnectionError:
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
