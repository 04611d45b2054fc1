"""transport:nexthop for one recipient (≈ qmgr_message_resolve() over trivial-rewrite).

The shared resolver (:mod:`postbus.resolve`) does the work smtpd's checks
also rely on: rewriting (``user%remote@local`` is ``user@remote``), the
address class, its transport, relayhost and transport_maps. The qmgr then
delivers to the *resolved* address, as Postfix's qmgr replaces the
recipient with the resolver's answer. ``error:`` and ``retry:`` carry a
text, optionally starting with an enhanced status code; an address the
resolver calls malformed bounces.

A table that cannot answer (TableRetry: Redis away, a bad table) makes the
recipient's route ``retry:4.3.0 address resolver failure``, as Postfix's
qmgr does when trivial-rewrite reports RESOLVE_FLAG_FAIL: the recipient is
deferred and tried again after the usual backoff. ``Route.failure`` says
which lookup failed and why, for the log.

A message with a content filter (:attr:`QueueEntry.filter`, from
content_filter or a FILTER action) goes to that transport:nexthop for
every recipient, unresolved: :meth:`RouteResolver.filtered`.

Mail to the local double-bounce address (double_bounce_sender in a local
domain: a postmaster notice that could not be delivered came back) is
discarded here, as Postfix's qmgr does, so there is never a triple bounce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postbus.config.loader import Config
from postbus.maps.table import TableRetry
from postbus.resolve import AddressClass, Resolver

_DSN = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+(.*)$", re.S)
DISCARDED = "undeliverable postmaster notification discarded"


@dataclass(frozen=True)
class Route:
    transport: str
    nexthop: str
    dsn: str = ""
    text: str = ""
    recipient: str = ""  # the resolved address
    failure: str = ""  # why the resolver failed, e.g. "transport_maps lookup failure: ..."


def resolver_failure(why: str) -> Route:
    """The route of a recipient that could not be resolved (≈ qmgr_resolve_one())."""
    return Route("retry", "4.3.0 address resolver failure", "4.3.0", "address resolver failure",
                 failure=why)


def _make_route(transport: str, nexthop: str, recipient: str) -> Route:
    if transport in ("error", "retry"):
        match = _DSN.match(nexthop)
        default = "5.0.0" if transport == "error" else "4.0.0"
        if match:
            return Route(transport, nexthop, match.group(1), match.group(2), recipient)
        text = nexthop or "delivery temporarily suspended"
        return Route(transport, nexthop, default, text, recipient)
    return Route(transport, nexthop, recipient=recipient)


class RouteResolver:
    def __init__(self, cfg: Config) -> None:
        self.resolver = Resolver(cfg)
        self.double_bounce = cfg.get("double_bounce_sender").lower()
        self.filter_nexthop = cfg.get("default_filter_nexthop")
        self.myhostname = cfg.get("myhostname")

    def filtered(self, filter: str, address: str) -> Route:
        """The route of every recipient of a message with a content filter
        (content_filter or a FILTER action): the filter overrides the resolver,
        and the address is left as it is. A filter without a next hop goes to
        default_filter_nexthop, else to the recipient's domain, else to
        $myhostname (≈ qmgr_message_resolve())."""
        transport, _, nexthop = filter.partition(":")
        if not nexthop:
            domain = address.rpartition("@")[2] if "@" in address else ""
            nexthop = self.filter_nexthop or domain or self.myhostname
        return _make_route(transport, nexthop, address)

    async def route(self, address: str, sender: str = "") -> Route:
        try:
            reply = await self.resolver.resolve(address, sender)
        except TableRetry as exc:
            return resolver_failure(str(exc))
        if reply.error:
            return Route("error", "", "5.1.3", "bad address syntax", address)
        local = reply.recipient.rpartition("@")[0] or reply.recipient
        if reply.address_class is AddressClass.LOCAL and local.lower() == self.double_bounce:
            return Route("discard", DISCARDED, "2.0.0", DISCARDED, reply.recipient)
        return _make_route(reply.transport, reply.nexthop, reply.recipient)
