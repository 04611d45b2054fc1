"""smtpd access restrictions, registered by name (≈ smtpd_check.c, split into small functions).

A restriction list (``smtpd_relay_restrictions = permit_mynetworks,
defer_unauth_destination``) is compiled once at start by :func:`compile_list`;
an unknown name is a configuration error then, not a surprise at the first
mail.  Each restriction is a coroutine returning ``None`` (DUNNO: go on),
:data:`PERMIT` (stop this list, accept) or a reply line (stop, reject or
defer).  At RCPT time :meth:`Policy.check_rcpt` runs, as Postfix 2.10+ with
``smtpd_delay_reject = yes`` does: the client, helo and sender lists, then
smtpd_relay_restrictions and smtpd_recipient_restrictions (in that order
with smtpd_relay_before_recipient_restrictions = yes, the default from
compatibility_level 3.6, else the other way round), then the "unlisted
recipient" table check for the recipient's address class.

Restrictions not implemented yet (reject_unknown_*, RBLs, policy services,
smtpd_restriction_classes) are refused at start with the name.
"""

from __future__ import annotations

import logging
import pwd
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from postbus.cleanup.api import receive_overrides
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.maps.addr_find import (
    find_access,
    find_client_access,
    find_domain_access,
)
from postbus.maps.maps import Maps, open_maps, table_specs
from postbus.maps.table import Table, TableRetry, fold_key
from postbus.resolve import AddressClass, Resolver, ResolveReply
from postbus.smtp import replies as r
from postbus.smtp.address import quote_local

log = logging.getLogger("postbus.smtpd")

PERMIT: Final = "PERMIT"



@dataclass
class CheckState:
    """What the restrictions see of the session (≈ the SMTPD_STATE fields they read)."""

    client_name: str
    client_addr: str
    helo: str = ""
    sender: str | None = None
    recipient: str = ""
    etrn: str = ""  # the site of an ETRN command
    reply_class: str = r.RECIPIENT  # whose name goes into a generic reject
    resolved: dict[str, ResolveReply] = field(default_factory=dict)  # per-command cache
    sasl_username: str | None = None  # SMTP AUTH (ingress_smtpd.sasl_checks)
    sasl_method: str | None = None


Restriction = Callable[["Policy", CheckState, Maps | None], Awaitable[str | None]]
REGISTRY: dict[str, Restriction] = {}
TABLE_RESTRICTIONS: set[str] = set()


def restriction(name: str, *, table: bool = False) -> Callable[[Restriction], Restriction]:
    def register(fn: Restriction) -> Restriction:
        REGISTRY[name] = fn
        if table:
            TABLE_RESTRICTIONS.add(name)
        return fn

    return register


@dataclass
class Step:
    name: str
    fn: Restriction
    maps: Maps | None = None


def compile_list(cfg: Config, param: str) -> list[Step]:
    """Parse one restriction-list parameter; ConfigError names an unknown restriction."""
    steps: list[Step] = []
    words = cfg.list(param)
    i = 0
    while i < len(words):
        name = words[i]
        fn = REGISTRY.get(name.lower())
        if fn is None:
            raise ConfigError(f'unknown smtpd restriction: "{name}"', parameter=param)
        maps = None
        if name.lower() in TABLE_RESTRICTIONS:
            i += 1
            if i >= len(words) or ":" not in words[i]:
                raise ConfigError(f"restriction {name} requires type:table", parameter=param)
            maps = open_maps(words[i], param)
        steps.append(Step(name.lower(), fn, maps))
        i += 1
    return steps


LEGACY_RECIPIENT_RESTRICTIONS = "permit_mynetworks reject_unauth_destination"
_RELAY_GUARDS = {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"}


class _PasswdTable(Table):
    """``unix:passwd.byname`` through getpwnam() (what proxy:unix:passwd.byname reads)."""

    fixed = True

    async def lookup(self, key: str) -> str | None:
        if "@" in key:
            return None
        try:
            entry = pwd.getpwnam(fold_key(key))
        except KeyError:
            return None
        return f"{entry.pw_name}:x:{entry.pw_uid}:{entry.pw_gid}:{entry.pw_gecos}:{entry.pw_dir}"


def _open_recipient_maps(value: str, title: str) -> Maps:
    maps = Maps(title=title)
    for spec in table_specs(value):
        if spec in ("proxy:unix:passwd.byname", "unix:passwd.byname"):
            maps.tables.append(_PasswdTable(spec))
        else:
            maps.tables.extend(open_maps(spec.removeprefix("proxy:"), title).tables)
    return maps


@dataclass
class Policy:
    """Everything the restrictions need, read once from the configuration."""

    cfg: Config
    client: list[Step] = field(default_factory=list)
    helo: list[Step] = field(default_factory=list)
    sender: list[Step] = field(default_factory=list)
    relay: list[Step] = field(default_factory=list)
    recipient: list[Step] = field(default_factory=list)
    etrn: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.client = compile_list(cfg, "smtpd_client_restrictions")
        self.helo = compile_list(cfg, "smtpd_helo_restrictions")
        self.sender = compile_list(cfg, "smtpd_sender_restrictions")
        self.relay = compile_list(cfg, "smtpd_relay_restrictions")
        self.recipient = compile_list(cfg, "smtpd_recipient_restrictions")
        self.etrn = compile_list(cfg, "smtpd_etrn_restrictions")
        names = {s.name for s in self.relay + self.recipient}
        explicit = cfg.is_set("smtpd_relay_restrictions") or cfg.is_set(
            "smtpd_recipient_restrictions"
        )
        if not names & _RELAY_GUARDS and not explicit:
            # compatibility_level 0 without either list: Postfix < 2.10's default
            log.info("using backwards-compatible default setting "
                     "smtpd_recipient_restrictions = %s", LEGACY_RECIPIENT_RESTRICTIONS)
            self.recipient = [Step(n, REGISTRY[n]) for n in LEGACY_RECIPIENT_RESTRICTIONS.split()]
        elif not names & _RELAY_GUARDS:
            raise ConfigError(
                "in parameters smtpd_relay_restrictions and smtpd_recipient_restrictions, "
                "specify at least one working instance of: reject_unauth_destination, "
                "defer_unauth_destination, reject, defer"
            )
        self.relay_first = cfg.bool("smtpd_relay_before_recipient_restrictions")
        self.access_parent = "smtpd_access_maps" in cfg.list("parent_domain_matches_subdomains")
        self.untrusted_routing = cfg.bool("allow_untrusted_routing")
        self.double_bounce = cfg.get("double_bounce_sender").lower()
        self.delimiter = cfg.get("recipient_delimiter")
        self.null_key = cfg.get("smtpd_null_access_lookup_key")
        self.resolver = Resolver(cfg)
        self.unlisted = cfg.bool("smtpd_reject_unlisted_recipient")
        # receive_override_options = no_unknown_recipient_checks turns the table check off
        self.rcpt_checks = "no_unknown_recipient_checks" not in receive_overrides(cfg)
        self.local_maps = _open_recipient_maps(
            cfg.get("local_recipient_maps"), "local_recipient_maps"
        )
        # addresses that cleanup will rewrite count as listed (≈ check_rcpt_maps())
        self.rewrite_maps = [
            open_maps(cfg.get(param), param)
            for param in ("recipient_canonical_maps", "canonical_maps", "virtual_alias_maps")
        ]
        self.mailbox_maps = open_maps(cfg.get("virtual_mailbox_maps"), "virtual_mailbox_maps")
        self.relay_maps = open_maps(cfg.get("relay_recipient_maps"), "relay_recipient_maps")

    # -- facts ------------------------------------------------------------------------

    async def in_mynetworks(self, addr: str) -> bool:
        return await self.resolver.in_mynetworks(addr)

    async def resolve(self, state: CheckState, address: str) -> ResolveReply:
        """The resolver's answer for ``address`` in mail from the transaction's sender
        (≈ smtpd_resolve_addr(), cached per command)."""
        reply = state.resolved.get(address)
        if reply is None:
            reply = state.resolved[address] = await self.resolver.resolve(
                address, state.sender or "")
        return reply

    async def auth_destination(self, state: CheckState) -> bool:
        """Mail to this recipient ends here or is ours to relay (≈ permit_auth_destination())."""
        reply = await self.resolve(state, state.recipient)
        if "@" not in reply.recipient:
            return True
        if reply.routed and not self.untrusted_routing:
            return False  # source-routed: an uncertain destination
        return reply.final or reply.address_class is AddressClass.RELAY

    # -- evaluation ---------------------------------------------------------------------

    async def evaluate(self, steps: list[Step], state: CheckState) -> str | None:
        for step in steps:
            result = await step.fn(self, state, step.maps)
            if result is not None:
                return result
        return None

    async def check_rcpt(self, state: CheckState) -> str | None:
        """The reply that rejects ``state.recipient``, or None to accept it.

        A bare ``postmaster`` is always accepted (RFC 5321 section 4.5.1)."""
        if state.recipient.lower() == "postmaster":
            return None
        try:
            rcpt_lists = [self.relay, self.recipient]
            if not self.relay_first:  # smtpd_relay_before_recipient_restrictions = no
                rcpt_lists.reverse()
            for steps, kind in (
                (self.client, r.CLIENT),
                (self.helo, r.HELO),
                (self.sender, r.SENDER),
                (rcpt_lists[0], r.RECIPIENT),
                (rcpt_lists[1], r.RECIPIENT),
            ):
                state.reply_class = kind
                result = await self.evaluate(steps, state)
                if result is not None and result != PERMIT:
                    return result
            if self.unlisted:
                return await self.check_unlisted(state)
        except TableRetry as exc:
            log.warning("%s", exc)
            return r.TEMPORARY_LOOKUP_FAILURE.format(what=state.recipient)
        return None

    async def check_etrn(self, state: CheckState) -> str | None:
        """The reply that refuses ETRN for ``state.etrn``, or None (≈ smtpd_check_etrn():
        with smtpd_delay_reject the client and helo lists first)."""
        try:
            for steps, kind in ((self.client, r.CLIENT), (self.helo, r.HELO),
                                (self.etrn, r.ETRN)):
                state.reply_class = kind
                result = await self.evaluate(steps, state)
                if result == PERMIT and kind == r.ETRN:
                    return None
                if result is not None and result != PERMIT:
                    return result
        except TableRetry as exc:
            log.warning("%s", exc)
            return r.TEMPORARY_LOOKUP_FAILURE.format(what=state.etrn)
        return None

    async def check_unlisted(self, state: CheckState) -> str | None:
        """reject_unlisted_recipient (≈ check_rcpt_maps()): the address must exist in
        its class's table; the error and retry transports reject at once."""
        if not self.rcpt_checks:
            return None
        address = state.recipient
        reply = await self.resolve(state, address)
        for rewrite in self.rewrite_maps:
            if rewrite and await self.resolver.find(rewrite, reply.recipient) is not None:
                return None
        if reply.transport in ("error", "retry"):
            soft = reply.transport == "retry"
            dsn, text = _dsn_split(reply.nexthop, "4.1.1" if soft else "5.1.1")
            code = 450 if soft else (
                self.cfg.int("unknown_virtual_alias_reject_code")
                if reply.address_class is AddressClass.VIRTUAL_ALIAS else 550
            )
            return r.ACCESS_REJECT.format(code=code, dsn=dsn, what=address, kind=r.RECIPIENT,
                                          text=text)
        table_param = {
            AddressClass.LOCAL: ("local_maps", r.LOCAL_RECIPIENT_TABLE,
                                 "unknown_local_recipient_reject_code"),
            AddressClass.VIRTUAL_MAILBOX: ("mailbox_maps", r.VIRTUAL_MAILBOX_TABLE,
                                           "unknown_virtual_mailbox_reject_code"),
            AddressClass.RELAY: ("relay_maps", r.RELAY_RECIPIENT_TABLE,
                                 "unknown_relay_recipient_reject_code"),
        }.get(reply.address_class)
        if table_param is None:
            return None
        attr, table, code_param = table_param
        maps: Maps = getattr(self, attr)
        if not maps.tables:
            return None
        local = reply.address_class is AddressClass.LOCAL
        if local and self._mail_system_name(reply.recipient):
            return None
        if await self.resolver.find(maps, reply.recipient) is not None:
            return None
        return r.USER_UNKNOWN.format(code=self.cfg.int(code_param), address=address, table=table)

    def _mail_system_name(self, recipient: str) -> bool:
        """postmaster, MAILER-DAEMON and the double-bounce sender exist in every local domain."""
        local = recipient.rpartition("@")[0].lower()
        return local in ("postmaster", "mailer-daemon", self.double_bounce)


def _dsn_split(text: str, default: str) -> tuple[str, str]:
    """``5.1.1 User unknown`` -> (``5.1.1``, ``User unknown``) (≈ dsn_split())."""
    word, _, rest = text.partition(" ")
    parts = word.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and word[0] in "245":
        return word, rest
    return default, text


# -- the restrictions -----------------------------------------------------------------------


def _what(state: CheckState) -> str:
    if state.reply_class == r.CLIENT:
        return f"{state.client_name}[{state.client_addr}]"
    if state.reply_class == r.HELO:
        return state.helo
    if state.reply_class == r.SENDER:
        return state.sender or ""
    if state.reply_class == r.ETRN:
        return state.etrn
    return state.recipient


def _reject(state: CheckState, code: int, dsn: str, text: str) -> str:
    return r.ACCESS_REJECT.format(
        code=code, dsn=dsn, what=_what(state), kind=state.reply_class, text=text
    )


@restriction("permit")
async def permit(policy: Policy, state: CheckState, maps: Maps | None) -> str | None:
    return PERMIT


@restriction("reject")
async def reject(policy: Policy, state: CheckState, maps: Maps | None) -> str | None:
    return _reject(state, policy.cfg.int("reject_code"), "5.7.1", r.ACCESS_DENIED)


@restriction("defer")
async def defer(policy: Policy, state: CheckState, maps: Maps | None) -> str | None:
    return _reject(state, policy.cfg.int("defer_code"), "4.7.1", r.ACCESS_DENIED)


@restriction("permit_mynetworks")
async def permit_mynetworks(policy: Policy, state: CheckState, maps: Maps | None) -> str | None:
    return PERMIT if await policy.in_mynetworks(state.client_addr) else None


async def _unauth(policy: Policy, state: CheckState, code: int, dsn: str) -> str | None:
    if not state.recipient or await policy.auth_destination(state):
        return None
    return r.RELAY_DENIED.format(code=code, dsn=dsn, address=state.recipient)


@restriction("reject_unauth_destination")
async def reject_unauth_destination(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    return await _unauth(policy, state, policy.cfg.int("relay_domains_reject_code"), "5.7.1")


@restriction("defer_unauth_destination")
async def defer_unauth_destination(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    return await _unauth(policy, state, 454, "4.7.1")  # fixed in Postfix too


@restriction("permit_auth_destination")
async def permit_auth_destination(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    return PERMIT if state.recipient and await policy.auth_destination(state) else None


@restriction("reject_unlisted_recipient")
async def reject_unlisted_recipient(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    return await policy.check_unlisted(state) if state.recipient else None


_NUMERIC_REPLY = re.compile(r"([45])(\d\d)(?:\s+([45]\.\d{1,3}\.\d{1,3}))?\s*(.*)", re.S)
_HARMLESS = {"WARN", "INFO", "PREPEND"}


async def _access_action(
    policy: Policy, state: CheckState, value: str, kind: str
) -> str | None:
    """Apply an access(5) result (≈ check_table_result())."""
    state.reply_class = kind
    word, _, text = value.strip().partition(" ")
    text = text.strip()
    upper = word.upper()
    if upper == "OK" or (word.isdigit() and len(value.split()) == 1):
        return PERMIT
    if upper == "DUNNO":
        return None
    if upper == "REJECT":
        return _reject(state, policy.cfg.int("access_map_reject_code"), "5.7.1",
                       text or r.ACCESS_DENIED)
    if upper == "DEFER":
        return _reject(state, policy.cfg.int("access_map_defer_code"), "4.7.1",
                       text or r.ACCESS_DENIED)
    match = _NUMERIC_REPLY.fullmatch(value.strip())
    if match:
        klass, rest, dsn, msg = match.groups()
        return _reject(state, int(klass + rest), dsn or f"{klass}.7.1", msg or r.ACCESS_DENIED)
    if upper in _HARMLESS:
        if upper != "PREPEND":
            log.info("%s: %s", upper.lower(), text)
        return None
    fn = REGISTRY.get(word.lower())
    if fn is None or word.lower() in TABLE_RESTRICTIONS:
        log.warning('unknown smtpd restriction: "%s"', word)
        return r.SERVER_CONFIGURATION_ERROR
    return await fn(policy, state, None)


@restriction("check_recipient_access", table=True)
async def check_recipient_access(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    assert maps is not None
    if not state.recipient:
        return None
    return await _check_address(policy, state, maps, state.recipient, r.RECIPIENT)


async def _check_address(
    policy: Policy, state: CheckState, maps: Maps, address: str, kind: str
) -> str | None:
    """access(5) lookup of an envelope address, then the action it names."""
    found = await find_access(
        maps, quote_local(address), recipient_delimiter=policy.delimiter,
        parent_matches_subdomains=policy.access_parent, null_key=policy.null_key,
    )
    if found is None:
        return None
    return await _access_action(policy, state, found.value, kind)


@restriction("check_etrn_access", table=True)
async def check_etrn_access(policy: Policy, state: CheckState, maps: Maps | None) -> str | None:
    assert maps is not None
    if not state.etrn:
        return None
    value = await find_domain_access(
        maps, state.etrn, parent_matches_subdomains=policy.access_parent
    )
    return None if value is None else await _access_action(policy, state, value, r.ETRN)


@restriction("check_sender_access", table=True)
async def check_sender_access(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    assert maps is not None
    if state.sender is None:
        return None
    return await _check_address(policy, state, maps, state.sender, r.SENDER)


@restriction("check_client_access", table=True)
async def check_client_access(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    assert maps is not None
    value = await find_client_access(
        maps, state.client_name, state.client_addr,
        parent_matches_subdomains=policy.access_parent,
    )
    return None if value is None else await _access_action(policy, state, value, r.CLIENT)


@restriction("check_helo_access", table=True)
async def check_helo_access(policy: Policy, state: CheckState, maps: Maps | None) -> str | None:
    assert maps is not None
    if not state.helo:
        return None
    value = await find_domain_access(
        maps, state.helo, parent_matches_subdomains=policy.access_parent
    )
    return None if value is None else await _access_action(policy, state, value, r.HELO)


def _non_fqdn(address: str) -> bool:
    domain = address.rpartition("@")[2]
    return "@" not in address or ("." not in domain and not domain.startswith("["))


@restriction("reject_non_fqdn_recipient")
async def reject_non_fqdn_recipient(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    if not state.recipient or not _non_fqdn(state.recipient):
        return None
    state.reply_class = r.RECIPIENT
    return _reject(state, policy.cfg.int("non_fqdn_reject_code"), "5.5.2",
                   "need fully-qualified address")


@restriction("reject_non_fqdn_sender")
async def reject_non_fqdn_sender(
    policy: Policy, state: CheckState, maps: Maps | None
) -> str | None:
    if not state.sender or not _non_fqdn(state.sender):
        return None
    state.reply_class = r.SENDER
    return _reject(state, policy.cfg.int("non_fqdn_reject_code"), "5.5.2",
                   "need fully-qualified address")


# registers permit_sasl_authenticated and the *_sender_login_mismatch restrictions
import ingress_smtpd.sasl_checks  # noqa: E402, F401
