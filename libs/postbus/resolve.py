"""Where an address goes (≈ trivial-rewrite's resolve.c, resolve_local.c), for smtpd's
relay and recipient checks and for the qmgr's routing alike.

:meth:`Resolver.resolve` follows Postfix's resolver loop to the letter:
strip every local domain (mydestination, our own address literals) off the
end of the address; while routing operators remain in the local part
(``@``, ``!`` with swap_bangpath, ``%`` with allow_percent_hack, also inside
a quoted local part with resolve_dequoted_address) rewrite and strip again.
So ``user%remote@local``, ``remote!user@local`` and ``"user@remote"@local``
all resolve to ``user@remote``: a remote destination, which smtpd relays
only for authorized clients. An empty local part becomes
empty_address_recipient; a bare name gets ``@$myhostname``. The result is
checked (a malformed domain sets ``error``: smtpd answers "Bad address
syntax") and tagged ``routed`` when routing operators remain.

The domain then picks the address class, checked in this order: local (the
loop stripped it), virtual alias (virtual_alias_domains: the error
transport, "User unknown in virtual alias table"), virtual mailbox
(virtual_mailbox_domains), relay (relay_domains) and default. Each class
has its transport parameter; relay and default mail goes to ``relayhost``
when set; a ``transport:nexthop`` parameter value overrides the next hop;
transport_maps (transport(5) order) overrides both, except for the virtual
alias class. The sender matters for relay and default mail:
sender_dependent_default_transport_maps picks the default class's
transport and sender_dependent_relayhost_maps overrides relayhost (the null
sender is looked up as empty_address_*_lookup_key; ``DUNNO`` means no
override). Last, relocated_maps turns a moved recipient into
``error:5.1.6 User has moved to ...`` whatever its class, and an address
starting with ``-`` is an error unless allow_min_user. Lookup failures
raise :class:`~postbus.maps.table.TableRetry`.

:meth:`Resolver.find` is mail_addr_find() for every caller that looks an
address up in Postfix's virtual/canonical order (cleanup, smtpd's
recipient tables): it knows which domains are local.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from dataclasses import dataclass

from postbus.config.loader import Config
from postbus.maps.addr_find import (
    ExtensionRules,
    Found,
    Query,
    Route,
    Strategy,
    mail_addr_find,
    resolve_transport,
)
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry
from postbus.match_lists import DomainList, Interfaces, NetworkList, parse_literal
from postbus.rewrite import RewriteRules
from postbus.smtp.address import valid_domain
from postbus.tok822 import QSTRING, Token, internalize, quote_822_local, rfind, scan

log = logging.getLogger("postbus.resolve")


class AddressClass(enum.Enum):
    LOCAL = "local"
    VIRTUAL_ALIAS = "virtual_alias"
    VIRTUAL_MAILBOX = "virtual_mailbox"
    RELAY = "relay"
    DEFAULT = "default"


FINAL_CLASSES = frozenset({AddressClass.LOCAL, AddressClass.VIRTUAL_ALIAS,
                           AddressClass.VIRTUAL_MAILBOX})


def split_address(address: str) -> tuple[str, str]:
    """``user@Example.COM`` -> (``user``, ``example.com``); no domain -> ''."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain.lower().rstrip(".")


@dataclass(frozen=True)
class ResolveReply:
    """What the resolver says of one address (≈ RESOLVE_REPLY)."""

    recipient: str  # the resolved address, internal form
    transport: str
    nexthop: str
    address_class: AddressClass
    routed: bool = False  # routing operators left in the local part
    error: bool = False  # malformed result: "Bad ... address syntax"

    @property
    def final(self) -> bool:
        """Mail for this class ends here (RESOLVE_CLASS_FINAL)."""
        return self.address_class in FINAL_CLASSES


_ROUTING = "@!%"


class Resolver:
    """Address classes, next hops and networks, read once from one Config."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        parent = set(cfg.list("parent_domain_matches_subdomains"))
        self.myorigin = cfg.get("myorigin").lower()
        self.myhostname = cfg.get("myhostname")
        self.rules = RewriteRules.local(cfg)
        self.mydestination = DomainList.from_config(cfg, "mydestination", parent)
        self.virtual_alias = DomainList.from_config(cfg, "virtual_alias_domains", parent)
        self.virtual_mailbox = DomainList.from_config(cfg, "virtual_mailbox_domains", parent)
        self.relay_domains = DomainList.from_config(cfg, "relay_domains", parent)
        self.interfaces = Interfaces(cfg)
        self.networks = NetworkList(cfg, "mynetworks")
        self.transport_maps = open_maps(cfg.get("transport_maps"), "transport_maps")
        self.transport_parent = "transport_maps" in parent
        self.delimiter = cfg.get("recipient_delimiter")
        self.empty_address = cfg.get("empty_address_recipient")
        self.null_domain = cfg.bool("resolve_null_domain")
        self.numeric_domain = cfg.bool("resolve_numeric_domain")
        self.dequoted = cfg.bool("resolve_dequoted_address")
        self.unknown_table = cfg.bool("show_user_unknown_table_name")
        self.relocated_maps = open_maps(cfg.get("relocated_maps"), "relocated_maps")
        self.sender_relay_maps = open_maps(cfg.get("sender_dependent_relayhost_maps"),
                                           "sender_dependent_relayhost_maps")
        self.sender_transport_maps = open_maps(
            cfg.get("sender_dependent_default_transport_maps"),
            "sender_dependent_default_transport_maps")
        self.null_relay_key = cfg.get("empty_address_relayhost_maps_lookup_key")
        self.null_transport_key = cfg.get("empty_address_default_transport_maps_lookup_key")
        self.allow_min_user = cfg.bool("allow_min_user")
        self.extension_rules = ExtensionRules(
            double_bounce_sender=cfg.get("double_bounce_sender"))

    async def in_mynetworks(self, addr: str) -> bool:
        return await self.networks.matches(addr)

    async def is_local(self, domain: str) -> bool:
        """mydestination or one of our own address literals (≈ resolve_local())."""
        if domain.endswith("."):
            domain = domain[:-1]
        if not domain or domain.endswith("."):
            return False
        if await _matches(self.mydestination, "mydestination", domain):
            return True
        return parse_literal(domain) is not None and self.interfaces.own(domain)

    async def address_class(self, address: str) -> AddressClass:
        return (await self.resolve(address)).address_class

    async def find(
        self, maps: Maps, address: str, *, query: Query = "external_first",
        strategy: Strategy = Strategy.DEFAULT,
    ) -> Found | None:
        """Look an internal-form address up in Postfix's order (≈ mail_addr_find_opt()):
        ``user`` keys only when the domain is $myorigin or local (resolve_local())."""
        at = address.rfind("@")
        local = False
        if at >= 0 and strategy & (Strategy.LOCALPART_IF_LOCAL | Strategy.LOCALPART_AT_IF_LOCAL):
            domain = address[at + 1 :]
            local = domain.lower() == self.myorigin or await self.is_local(domain)
        return await mail_addr_find(
            maps, address, strategy, recipient_delimiter=self.delimiter,
            is_local=lambda _domain: local, rules=self.extension_rules, query=query,
        )

    async def _sender_find(self, maps: Maps, sender: str, null_key: str) -> str | None:
        """A sender-dependent lookup; ``DUNNO`` and empty results mean none."""
        key = sender or null_key
        try:
            found = await self.find(maps, key)
        except TableRetry as exc:
            raise TableRetry(f"{maps.title} lookup failure: {exc}") from exc
        if found is None or found.value.upper() == "DUNNO":
            return None
        return found.value

    # -- the resolver loop ------------------------------------------------------------

    async def _strip_local(self, address: str) -> tuple[list[Token], bool]:
        """The address with every local domain stripped and routing undone; True when
        a remote domain is left on the end (≈ the big loop of resolve_addr())."""
        tokens = scan(quote_822_local(address))
        rules = self.rules
        saved: list[Token] | None = None
        for _ in range(len(address) + 100):
            if (len(tokens) > 1 and tokens[-1][0] == "." and rfind(tokens, "@") >= 0
                    and tokens[-2][0] not in (".", "@")):
                tokens = tokens[:-1]
            if self.null_domain and tokens and tokens[-1][0] == "@":
                tokens = tokens[:-1]
            at = rfind(tokens, "@")
            if at >= 0:
                if at + 1 < len(tokens) and not await self.is_local(internalize(tokens[at + 1 :])):
                    return tokens, True
                tokens, saved = tokens[:at], tokens[at:]
            if rfind(tokens, "@") >= 0 or (rules.swap_bangpath and rfind(tokens, "!") >= 0) or (
                rules.percent_hack and rfind(tokens, "%") >= 0
            ):
                tokens = rules.rewrite(tokens)
                continue
            if self.dequoted and len(tokens) == 1 and tokens[0][0] == QSTRING:
                local = tokens[0][1]
                oper = local.rfind("@")
                if oper < 0 and rules.percent_hack:
                    oper = local.rfind("%")
                if oper < 0 and rules.swap_bangpath:
                    oper = local.rfind("!")
                if oper >= 0:
                    if local[oper] == "%":
                        local = f"{local[:oper]}@{local[oper + 1:]}"
                    if local[oper] == "@":
                        local = quote_822_local(local)
                    tokens = rules.rewrite(scan(local))
                    continue
            if tokens == [(QSTRING, "")]:
                tokens = []
            if not tokens:
                tokens = scan(self.empty_address)
                continue
            if saved is None:
                tokens = [*tokens, ("@", "@"), *scan(self.myhostname)]
                continue
            return [*tokens, *saved], False
        log.warning("warning: resolve_addr: <%s>: giving up after %d iterations",
                    address, len(address) + 100)
        raise TableRetry(f"resolve_addr: <{address}>: giving up")

    async def _strip(self, address: str) -> tuple[str, bool]:
        """The address after :meth:`_strip_local`, internal form, and whether it is
        remote. A plain ``local@domain`` (dot-atoms, no routing operator) leaves the
        loop as it came, remote unless its domain is local: that is known without
        tokenizing it (most mail)."""
        if _PLAIN.fullmatch(address):
            return address, not await self.is_local(address[address.rfind("@") + 1 :])
        tokens, remote = await self._strip_local(address)
        return internalize(tokens), remote

    async def resolve(self, address: str, sender: str = "") -> ResolveReply:
        """Resolve one address for mail from ``sender`` (≈ resolve_addr())."""
        recipient, remote = await self._strip(address)
        domain = recipient[recipient.rfind("@") + 1 :]
        if self.numeric_domain and _is_ip(domain):  # resolve_numeric_domain: user@[1.2.3.4]
            domain = f"[{domain}]"
            recipient = f"{recipient[: recipient.rfind('@')]}@{domain}"
            remote = remote and not await self.is_local(domain)
        if not _valid_result(recipient, domain):
            return ResolveReply(recipient, "", "", AddressClass.DEFAULT, error=True)
        first = min((recipient.find(op) for op in _ROUTING if op in recipient), default=-1)
        routed = recipient[first + 1 :] != domain
        if not remote:
            cls, param = AddressClass.LOCAL, "local_transport"
        elif await _matches(self.virtual_alias, "virtual_alias_domains", domain):
            cls, param = AddressClass.VIRTUAL_ALIAS, ""
        elif await _matches(self.virtual_mailbox, "virtual_mailbox_domains", domain):
            cls, param = AddressClass.VIRTUAL_MAILBOX, "virtual_transport"
        elif await _matches(self.relay_domains, "relay_domains", domain):
            cls, param = AddressClass.RELAY, "relay_transport"
        else:
            cls, param = AddressClass.DEFAULT, "default_transport"
        if cls is AddressClass.VIRTUAL_ALIAS:  # transport_maps cannot override this one
            table = " in virtual alias table" if self.unknown_table else ""
            transport, nexthop = "error", f"5.1.1 User unknown{table}"
        else:
            transport, nexthop = await self._route(cls, param, recipient, domain, sender)
        if self.relocated_maps:
            try:
                moved = await self.find(self.relocated_maps, recipient)
            except TableRetry as exc:
                raise TableRetry(f"relocated_maps lookup failure: {exc}") from exc
            if moved is not None:
                transport, nexthop = "error", f"5.1.6 User has moved to {moved.value}"
        if not self.allow_min_user and recipient.startswith("-"):
            return ResolveReply(recipient, transport, nexthop, cls, routed, error=True)
        return ResolveReply(recipient, transport, nexthop, cls, routed)

    async def _route(self, cls: AddressClass, param: str, recipient: str, domain: str,
                     sender: str) -> tuple[str, str]:
        """Transport and next hop of a class, then transport_maps."""
        channel = self.cfg.get(param)
        nexthop = domain
        if cls is AddressClass.DEFAULT and self.sender_transport_maps:
            channel = await self._sender_find(
                self.sender_transport_maps, sender, self.null_transport_key) or channel
        if cls in (AddressClass.RELAY, AddressClass.DEFAULT):  # relayhost precedences
            relay = None
            if self.sender_relay_maps:
                relay = await self._sender_find(self.sender_relay_maps, sender,
                                                self.null_relay_key)
            nexthop = relay or self.cfg.get("relayhost") or domain
        transport, _, destination = channel.partition(":")
        nexthop = destination or nexthop  # main.cf transport:nexthop wins
        try:
            found = await resolve_transport(
                self.transport_maps, recipient, domain.lower(), Route(transport, nexthop),
                recipient_delimiter=self.delimiter,
                parent_matches_subdomains=self.transport_parent,
            )
        except TableRetry as exc:
            raise TableRetry(f"transport_maps lookup failure: {exc}") from exc
        if found is not None:
            return found.transport, found.nexthop
        return transport, nexthop


async def _matches(domains: DomainList, param: str, domain: str) -> bool:
    """A domain list match; a table that cannot answer names the list (≈ "%s lookup failure")."""
    try:
        return await domains.matches(domain)
    except TableRetry as exc:
        raise TableRetry(f"{param} lookup failure: {exc}") from exc


#: local@domain where neither side can hold a routing operator, a quote or a
#: comment: atext without ``!`` and ``%`` in dot-atoms; a domain of labels.
_PLAIN = re.compile(r"[A-Za-z0-9#$&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9#$&'*+/=?^_`{|}~-]+)*"
                    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_result(recipient: str, domain: str) -> bool:
    """The resolved address is usable: a valid host name or address literal, valid UTF-8."""
    if "@" not in recipient or (not recipient.isascii() and any(
            "\udc80" <= ch <= "\udcff" for ch in recipient)):
        return False
    if domain.startswith("["):
        return parse_literal(domain) is not None
    return valid_domain(domain)
