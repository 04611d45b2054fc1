"""Postfix's match lists: domain lists and network lists (≈ domain_list.c, namadr_list.c,
match_list.c, inet_addr_local.c).

A domain list (mydestination, relay_domains, virtual_*_domains) holds names,
``.parent`` names, ``!`` exclusions and type:table entries; the first entry
that matches decides. A network list (mynetworks) holds addresses and
CIDR blocks, ``!`` exclusions and tables. :class:`Interfaces` answers
"is this one of our own addresses?" for address literals such as
``user@[127.0.0.1]`` (inet_interfaces and proxy_interfaces).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass

from postbus.config.loader import Config
from postbus.maps.addr_find import find_domain_access
from postbus.maps.maps import Maps, open_maps

log = logging.getLogger("postbus.resolve")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> Address | None:
    """``ipaddress.ip_address(text)``, or None; cached, because each session asks it of
    the same client address in several lists (the objects are immutable)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_network(text: str) -> Network | None:
    """``10.0.0.0/8``, ``[::1]/128``, ``1.2.3.4``; None when it is no network."""
    text = text.strip()
    if text.startswith("["):
        text = text.replace("[", "").replace("]", "")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def parse_literal(domain: str) -> Address | None:
    """The address of a ``[1.2.3.4]`` or ``[IPv6:::1]`` domain literal, else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    literal = domain[1:-1]
    if literal[:5].lower() == "ipv6:":
        try:
            return ipaddress.IPv6Address(literal[5:])
        except ValueError:
            return None
    try:
        return ipaddress.IPv4Address(literal)
    except ValueError:
        return None


@dataclass
class DomainList:
    """A Postfix domain list such as mydestination or relay_domains."""

    items: list[tuple[bool, str, Maps | None]]
    parent: bool  # parent_domain_matches_subdomains names this parameter

    @classmethod
    def from_config(cls, cfg: Config, param: str, parent_params: set[str]) -> DomainList:
        items: list[tuple[bool, str, Maps | None]] = []
        for word in cfg.list(param):
            negate = word.startswith("!")
            word = word.lstrip("!")
            if ":" in word and not word.startswith("["):
                items.append((negate, word, open_maps(word, param)))
            else:
                items.append((negate, word.lower().rstrip("."), None))
        return cls(items, param in parent_params)

    def __bool__(self) -> bool:
        return bool(self.items)

    async def matches(self, domain: str) -> bool:
        domain = domain.lower()
        for negate, name, maps in self.items:
            if maps is not None:
                if self.parent:
                    value = await find_domain_access(maps, domain, parent_matches_subdomains=True)
                else:
                    value = await maps.find(domain)
                hit = value is not None
            else:
                hit = domain == name or (
                    domain.endswith("." + name.lstrip("."))
                    and (self.parent or name.startswith("."))
                )
            if hit:
                return not negate
        return False


class NetworkList:
    """mynetworks and its kind: first matching entry decides, ``!`` excludes."""

    def __init__(self, cfg: Config, param: str) -> None:
        self.entries: list[tuple[bool, Network | Maps]] = []
        for word in cfg.list(param):
            negate = word.startswith("!")
            word = word.lstrip("!")
            net = parse_network(word)
            if net is None and ":" in word and not word.startswith("["):
                self.entries.append((negate, open_maps(word, param)))
            elif net is None:
                log.warning("warning: %s: ignoring unparsable entry %s", param, word)
            else:
                self.entries.append((negate, net))

    async def matches(self, addr: str) -> bool:
        ip = parse_ip(addr)
        if ip is None:
            return False
        for negate, net in self.entries:
            if isinstance(net, Maps):
                hit = await net.find(addr) is not None
            else:
                hit = ip.version == net.version and ip in net
            if hit:
                return not negate
        return False


class Interfaces:
    """Our own addresses, from inet_interfaces and proxy_interfaces (≈ own_inet_addr()).

    ``all`` counts the loopback addresses (the host's other addresses are not
    enumerated); ``loopback-only`` is 127.0.0.1 and ::1, as inet_protocols allows.
    """

    def __init__(self, cfg: Config) -> None:
        protocols = {p.lower() for p in cfg.list("inet_protocols")}
        v4 = bool(protocols & {"all", "ipv4"})
        v6 = bool(protocols & {"all", "ipv6"})
        self.addresses: set[Address] = set()
        for word in [*cfg.list("inet_interfaces"), *cfg.list("proxy_interfaces")]:
            if word.lower() in ("all", "loopback-only"):
                if v4:
                    self.addresses.add(ipaddress.IPv4Address("127.0.0.1"))
                if v6:
                    self.addresses.add(ipaddress.IPv6Address("::1"))
                continue
            net = parse_network(word)
            if net is not None and net.num_addresses == 1:
                self.addresses.add(net.network_address)

    def own(self, domain: str) -> bool:
        """``[127.0.0.1]``-style literals naming one of our own addresses."""
        ip = parse_literal(domain)
        return ip is not None and ip in self.addresses
