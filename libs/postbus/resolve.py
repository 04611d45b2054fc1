"""Address classes, networks and next hops (≈ trivial-rewrite's resolve.c and
Postfix's domain_list / namadr_list), shared by ingress (is this an authorized
destination? is the client in mynetworks?) and qmgr (where does it go?).

Postfix sorts every recipient domain into one class, checked in this order:
local (mydestination, address literals of $inet_interfaces and
$proxy_interfaces), virtual alias (virtual_alias_domains), virtual mailbox
(virtual_mailbox_domains), relay (relay_domains) and default. Each class has
its transport parameter; the relay and default classes send to ``relayhost``
when it is set. transport_maps (transport(5) order) overrides the class's
choice; that is the qmgr's business.

Domain lists hold names, ``.parent`` names, ``!`` exclusions and type:table
entries; the first entry that matches decides.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from dataclasses import dataclass

from postbus.config.loader import Config
from postbus.maps.addr_find import find_domain_access
from postbus.maps.maps import Maps, open_maps

log = logging.getLogger("postbus.resolve")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressClass(enum.Enum):
    LOCAL = "local"
    VIRTUAL_ALIAS = "virtual_alias"
    VIRTUAL_MAILBOX = "virtual_mailbox"
    RELAY = "relay"
    DEFAULT = "default"


def split_address(address: str) -> tuple[str, str]:
    """``user@Example.COM`` -> (``user``, ``example.com``); no domain -> ''."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain.lower().rstrip(".")


def parse_network(text: str) -> Network | None:
    """``10.0.0.0/8``, ``[::1]/128``, ``1.2.3.4``; None when it is no network."""
    text = text.strip()
    if text.startswith("["):
        text = text.replace("[", "").replace("]", "")
    try:
        return ipaddress.ip_network(text, strict=False)
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

    async def matches(self, domain: str) -> bool:
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


@dataclass(frozen=True)
class Resolved:
    """Where a recipient goes: ``transport:nexthop`` plus its class."""

    address_class: AddressClass
    transport: str
    nexthop: str


class Resolver:
    """Answers address-class, network and next-hop questions from one Config."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        parent = set(cfg.list("parent_domain_matches_subdomains"))
        self.myorigin = cfg.get("myorigin").lower()
        self.mydestination = DomainList.from_config(cfg, "mydestination", parent)
        self.virtual_alias = DomainList.from_config(cfg, "virtual_alias_domains", parent)
        self.virtual_mailbox = DomainList.from_config(cfg, "virtual_mailbox_domains", parent)
        self.relay_domains = DomainList.from_config(cfg, "relay_domains", parent)
        self.interface_words = cfg.list("inet_interfaces")
        self.interfaces = [parse_network(a) for a in cfg.list("inet_interfaces")]
        self.interfaces += [parse_network(a) for a in cfg.list("proxy_interfaces")]
        self.networks: list[tuple[bool, Network | Maps]] = []
        for word in cfg.list("mynetworks"):
            negate = word.startswith("!")
            word = word.lstrip("!")
            net = parse_network(word)
            if net is None and ":" in word and not word.startswith("["):
                self.networks.append((negate, open_maps(word, "mynetworks")))
            elif net is None:
                log.warning("warning: mynetworks: ignoring unparsable entry %s", word)
            else:
                self.networks.append((negate, net))

    async def in_mynetworks(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        for negate, net in self.networks:
            if isinstance(net, Maps):
                hit = await net.find(addr) is not None
            else:
                hit = ip.version == net.version and ip in net
            if hit:
                return not negate
        return False

    def local_literal(self, domain: str) -> bool:
        """``[127.0.0.1]`` style domains naming one of our own addresses."""
        if not (domain.startswith("[") and domain.endswith("]")):
            return False
        literal = domain[1:-1]
        if literal[:5].lower() == "ipv6:":
            literal = literal[5:]
        try:
            ip = ipaddress.ip_address(literal)
        except ValueError:
            return False
        words = self.interface_words
        if ip.is_loopback and ("all" in words or "loopback-only" in words):
            return True
        return any(n is not None and ip.version == n.version and ip in n for n in self.interfaces)

    async def is_local(self, domain: str) -> bool:
        return self.local_literal(domain) or await self.mydestination.matches(domain)

    async def address_class(self, address: str) -> AddressClass:
        """The class of an address's domain; a bare name gets @$myorigin."""
        local, at, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".") if at else self.myorigin
        if not at:
            local = address
        if "%" in local and await self.is_local(domain):  # allow_percent_hack
            domain = local.rsplit("%", 1)[1].lower()
        if await self.is_local(domain):
            return AddressClass.LOCAL
        if await self.virtual_alias.matches(domain):
            return AddressClass.VIRTUAL_ALIAS
        if await self.virtual_mailbox.matches(domain):
            return AddressClass.VIRTUAL_MAILBOX
        if await self.relay_domains.matches(domain):
            return AddressClass.RELAY
        return AddressClass.DEFAULT

    async def default_route(self, address: str) -> Resolved:
        """The class's transport and next hop, before transport_maps."""
        _, domain = split_address(address)
        cls = await self.address_class(address)
        param = {
            AddressClass.LOCAL: "local_transport",
            AddressClass.VIRTUAL_ALIAS: "error",
            AddressClass.VIRTUAL_MAILBOX: "virtual_transport",
            AddressClass.RELAY: "relay_transport",
            AddressClass.DEFAULT: "default_transport",
        }[cls]
        if param == "error":
            return Resolved(cls, "error", "5.1.1 User unknown in virtual alias table")
        transport, _, nexthop = self.cfg.get(param).partition(":")
        if not nexthop:
            if cls is AddressClass.LOCAL:
                nexthop = self.cfg.get("myhostname")
            elif cls in (AddressClass.RELAY, AddressClass.DEFAULT) and self.cfg.get("relayhost"):
                nexthop = self.cfg.get("relayhost")
            else:
                nexthop = domain
        return Resolved(cls, transport, nexthop)
