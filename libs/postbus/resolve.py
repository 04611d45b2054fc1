"""Address classes and next hops (≈ trivial-rewrite's resolve.c), shared by
ingress (is this an authorized destination?) and qmgr (where does it go?).

Postfix sorts every recipient domain into one class, checked in this order:
local (mydestination, $inet_interfaces literals), virtual alias
(virtual_alias_domains), virtual mailbox (virtual_mailbox_domains), relay
(relay_domains) and default. Each class has its transport parameter; the
relay and default classes send to ``relayhost`` when it is set.
transport_maps (transport(5) order) overrides the class's choice.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from postbus.config.loader import Config


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


def _matches_domain_list(domain: str, items: list[str], parent_match: bool) -> bool:
    """Postfix domain_list matching for plain names (tables handled by callers)."""
    for item in items:
        name = item.lower().rstrip(".")
        if ":" in name and not name.startswith("["):
            continue  # type:table entries are looked up by the maps layer
        if name.startswith("!"):
            if _matches_domain_list(domain, [name[1:]], parent_match):
                return False
            continue
        if domain == name:
            return True
        if parent_match and domain.endswith("." + name.lstrip(".")):
            return True
        if name.startswith(".") and domain.endswith(name):
            return True
    return False


def _is_local_literal(domain: str, cfg: Config) -> bool:
    if not (domain.startswith("[") and domain.endswith("]")):
        return False
    literal = domain[1:-1].removeprefix("ipv6:")
    try:
        addr = ipaddress.ip_address(literal)
    except ValueError:
        return False
    interfaces = cfg.list("inet_interfaces")
    if "all" in interfaces:
        return True
    if "loopback-only" in interfaces or "localhost" in interfaces:
        return addr.is_loopback
    return literal in interfaces or (addr.is_loopback and "127.0.0.1" in interfaces)


@dataclass(frozen=True)
class Resolved:
    """Where a recipient goes: ``transport:nexthop`` plus its class."""

    address_class: AddressClass
    transport: str
    nexthop: str


class Resolver:
    """Answers address-class and next-hop questions from one Config."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        parent = cfg.get("parent_domain_matches_subdomains")
        self._parent = {p.strip() for p in parent.replace(",", " ").split()}

    def _in(self, param: str, domain: str) -> bool:
        return _matches_domain_list(domain, self.cfg.list(param), param in self._parent)

    def address_class(self, domain: str) -> AddressClass:
        if not domain or self._in("mydestination", domain) or _is_local_literal(domain, self.cfg):
            return AddressClass.LOCAL
        if self._in("virtual_alias_domains", domain):
            return AddressClass.VIRTUAL_ALIAS
        if self._in("virtual_mailbox_domains", domain):
            return AddressClass.VIRTUAL_MAILBOX
        if self._in("relay_domains", domain):
            return AddressClass.RELAY
        return AddressClass.DEFAULT

    def is_auth_destination(self, domain: str) -> bool:
        """Mail for this domain may be accepted from anyone (reject_unauth_destination)."""
        return self.address_class(domain) is not AddressClass.DEFAULT

    def default_route(self, address: str) -> Resolved:
        """The class's transport and next hop, before transport_maps."""
        _, domain = split_address(address)
        cls = self.address_class(domain)
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
