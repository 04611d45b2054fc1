"""transport:nexthop for one recipient (≈ trivial-rewrite resolve + transport.c).

The address class gives the default route (postbus.resolve); transport_maps,
looked up in transport(5) order, may replace the transport, the next hop or
both (an empty field keeps the default). ``error:`` and ``retry:`` carry a
text, optionally starting with an enhanced status code.

A table that cannot answer (TableRetry: Redis away, a bad table) makes the
recipient's route ``retry:4.3.0 address resolver failure``, as Postfix's
qmgr does when trivial-rewrite reports RESOLVE_FLAG_FAIL: the recipient is
deferred and tried again after the usual backoff. ``Route.failure`` says
which lookup failed and why, for the log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postbus.config.loader import Config
from postbus.maps.addr_find import Route as TransportRoute
from postbus.maps.addr_find import resolve_transport
from postbus.maps.maps import open_maps
from postbus.maps.table import TableRetry
from postbus.resolve import Resolver, split_address

_DSN = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+(.*)$", re.S)


@dataclass(frozen=True)
class Route:
    transport: str
    nexthop: str
    dsn: str = ""
    text: str = ""
    failure: str = ""  # why the resolver failed, e.g. "transport_maps lookup failure: ..."


def resolver_failure(why: str) -> Route:
    """The route of a recipient that could not be resolved (≈ qmgr_resolve_one())."""
    return Route("retry", "4.3.0 address resolver failure", "4.3.0", "address resolver failure",
                 why)


def _make_route(transport: str, nexthop: str) -> Route:
    if transport in ("error", "retry"):
        match = _DSN.match(nexthop)
        default = "5.0.0" if transport == "error" else "4.0.0"
        if match:
            return Route(transport, nexthop, match.group(1), match.group(2))
        return Route(transport, nexthop, default, nexthop or "delivery temporarily suspended")
    return Route(transport, nexthop)


class RouteResolver:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.classes = Resolver(cfg)
        self.transport_maps = open_maps(cfg.get("transport_maps"))

    async def route(self, address: str) -> Route:
        try:
            default = await self.classes.default_route(address)
        except TableRetry as exc:
            return resolver_failure(f"address class lookup failure: {exc}")
        route = TransportRoute(default.transport, default.nexthop)
        try:
            found = await resolve_transport(
                self.transport_maps,
                address,
                split_address(address)[1],
                route,
                recipient_delimiter=self.cfg.get("recipient_delimiter"),
                parent_matches_subdomains="transport_maps"
                in self.cfg.get("parent_domain_matches_subdomains"),
            )
        except TableRetry as exc:
            return resolver_failure(f"transport_maps lookup failure: {exc}")
        if found is not None:
            route = found
        return _make_route(route.transport, route.nexthop)
