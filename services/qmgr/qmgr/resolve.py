"""transport:nexthop for one recipient (≈ trivial-rewrite resolve + transport.c).

The address class gives the default route (postbus.resolve); transport_maps,
looked up in transport(5) order, may replace the transport, the next hop or
both (an empty field keeps the default). ``error:`` and ``retry:`` carry a
text, optionally starting with an enhanced status code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postbus.config.loader import Config
from postbus.maps.addr_find import Route as TransportRoute
from postbus.maps.addr_find import resolve_transport
from postbus.maps.maps import open_maps
from postbus.resolve import Resolver, split_address

_DSN = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+(.*)$", re.S)


@dataclass(frozen=True)
class Route:
    transport: str
    nexthop: str
    dsn: str = ""
    text: str = ""


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
        default = await self.classes.default_route(address)
        route = TransportRoute(default.transport, default.nexthop)
        found = await resolve_transport(
            self.transport_maps,
            address,
            split_address(address)[1],
            route,
            recipient_delimiter=self.cfg.get("recipient_delimiter"),
            parent_matches_subdomains="transport_maps"
            in self.cfg.get("parent_domain_matches_subdomains"),
        )
        if found is not None:
            route = found
        return _make_route(route.transport, route.nexthop)
