"""The restriction stages and their moment of evaluation (≈ smtpd_check_client() ...
smtpd_check_eod()).

With ``smtpd_delay_reject = yes`` (the default) the client, helo and sender
lists run at RCPT TO (and the client and helo lists at ETRN), as Postfix
2.10+ does; with ``no`` each runs at its own command: the client list at
connect, the helo list at HELO/EHLO, the sender list at MAIL FROM.  At RCPT
TO: smtpd_relay_restrictions and smtpd_recipient_restrictions (relay first
with smtpd_relay_before_recipient_restrictions = yes, the default from
compatibility_level 3.6), then the "unlisted recipient" table check.
smtpd_data_restrictions run at DATA (and at BDAT's first chunk) and
smtpd_end_of_data_restrictions after the message content, before ``250``.

A stage's list stops at the first PERMIT or reject; a PERMIT never skips
a later stage.  A defer_if_permit raised in one stage carries into the
later stages of the same transaction as in Postfix.  A configuration error
found while evaluating (an unknown name in an access table, a bad
argument) ends the stage with ``451 4.3.5 Server configuration error``; a
table that cannot answer with ``451 4.3.0 ... Temporary lookup failure``.
"""

from __future__ import annotations

from typing import Any

from ingress_smtpd.restrictions import builtin as _builtin  # noqa: F401  (registers)
from ingress_smtpd.restrictions import ccert as _ccert  # noqa: F401
from ingress_smtpd.restrictions import dns_checks as _dns_checks  # noqa: F401
from ingress_smtpd.restrictions import sasl as _sasl  # noqa: F401
from ingress_smtpd.restrictions import server_access as _server_access  # noqa: F401
from ingress_smtpd.restrictions.dns_checks import make_resolver, tempfail_action
from ingress_smtpd.restrictions.policy_client import PolicyClients
from ingress_smtpd.restrictions.registry import Compiler, Step
from ingress_smtpd.restrictions.state import (
    DATA,
    END_OF_DATA,
    PERMIT,
    CheckState,
    ServerError,
    finish,
    log,
    whatsup,
)
from ingress_smtpd.restrictions.unlisted import check_unlisted, open_recipient_maps
from postbus import metrics
from postbus.cleanup.api import receive_overrides
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.maps.maps import open_maps
from postbus.maps.table import TableRetry
from postbus.resolve import AddressClass, Resolver, ResolveReply
from postbus.smtp import replies as r

LEGACY_RECIPIENT_RESTRICTIONS = "permit_mynetworks reject_unauth_destination"
_RELAY_GUARDS = {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"}
_RHS_CACHE_LIMIT = 1000


class Policy:
    """Everything the restrictions need, read once from the configuration."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        classes: dict[str, str] = {}
        for name in cfg.list("smtpd_restriction_classes"):
            if not cfg.is_set(name):
                raise ConfigError(f"restriction class {name} needs a definition",
                                  parameter="smtpd_restriction_classes")
            classes[name.lower()] = cfg.get(name)
        self.policy_clients = PolicyClients(cfg)
        self.dns = make_resolver(cfg)
        tempfail_action(cfg, "reject_tempfail_action")  # the others' default: refuse it early
        self.helo_tempfail = tempfail_action(cfg, "unknown_helo_hostname_tempfail_action")
        self.address_tempfail = tempfail_action(cfg, "unknown_address_tempfail_action")
        self.compiler = Compiler(classes, self.policy_clients.get)
        self._rhs: dict[str, list[Step]] = {}
        self.compiler.compile_classes()
        self.client = self._compile("smtpd_client_restrictions")
        self.helo = self._compile("smtpd_helo_restrictions")
        self.sender = self._compile("smtpd_sender_restrictions")
        self.relay = self._compile("smtpd_relay_restrictions")
        self.recipient = self._compile("smtpd_recipient_restrictions")
        self.etrn = self._compile("smtpd_etrn_restrictions")
        self.data = self._compile("smtpd_data_restrictions")
        self.eod = self._compile("smtpd_end_of_data_restrictions")
        self.delay_reject = cfg.bool("smtpd_delay_reject")
        names = {s.name for s in self.relay + self.recipient}
        explicit = cfg.is_set("smtpd_relay_restrictions") or cfg.is_set(
            "smtpd_recipient_restrictions"
        )
        if not names & _RELAY_GUARDS and not explicit:
            # compatibility_level 0 without either list: Postfix < 2.10's default
            log.info("using backwards-compatible default setting "
                     "smtpd_recipient_restrictions = %s", LEGACY_RECIPIENT_RESTRICTIONS)
            self.recipient = self.compiler.compile(LEGACY_RECIPIENT_RESTRICTIONS.split(),
                                                   "smtpd_recipient_restrictions")
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
        self.local_maps = open_recipient_maps(cfg.get("local_recipient_maps"),
                                              "local_recipient_maps")
        # addresses that cleanup will rewrite count as listed (≈ check_rcpt_maps())
        self.rewrite_maps = [
            open_maps(cfg.get(param), param)
            for param in ("recipient_canonical_maps", "canonical_maps", "virtual_alias_maps")
        ]
        self.mailbox_maps = open_maps(cfg.get("virtual_mailbox_maps"), "virtual_mailbox_maps")
        self.relay_maps = open_maps(cfg.get("relay_recipient_maps"), "relay_recipient_maps")
        self.sender_canonical = open_maps(cfg.get("sender_canonical_maps"),
                                          "sender_canonical_maps")
        self.unlisted_sender = cfg.bool("smtpd_reject_unlisted_sender")
        self.relay_ccerts = open_maps(cfg.get("relay_clientcerts"), "relay_clientcerts")

    def _compile(self, param: str) -> list[Step]:
        return self.compiler.compile(self.cfg.list(param), param)

    def compile_rhs(self, words: list[str], table: str) -> list[Step]:
        """An access table's right-hand side as a restriction list (cached)."""
        key = " ".join(words)
        steps = self._rhs.get(key)
        if steps is None:
            steps = self.compiler.compile(words, table)
            if len(self._rhs) >= _RHS_CACHE_LIMIT:
                self._rhs.clear()
            self._rhs[key] = steps
        return steps

    async def close(self) -> None:
        await self.policy_clients.close()

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

    async def check_unlisted(self, state: CheckState) -> str | None:
        return await check_unlisted(self, state)

    # -- evaluation ---------------------------------------------------------------------

    async def evaluate(self, steps: list[Step], state: CheckState) -> str | None:
        """One list (≈ generic_checks()): None (DUNNO), PERMIT, or the reject reply."""
        kind = state.reply_class
        saved_warn = state.warn_if_reject
        try:
            for step in steps:
                if state.memory.discard:
                    break  # DISCARD decided: nothing more to check
                if step.name == "warn_if_reject":
                    state.warn_if_reject = state.warn_if_reject or state.recursion + 1
                    continue
                state.reply_class = kind
                result = await step.fn(self, state, step)
                if result is None:
                    continue
                if result == PERMIT:
                    return PERMIT
                reply = finish(state, result)
                if reply is not None:
                    return reply
            return None
        finally:
            state.warn_if_reject = saved_warn
            state.reply_class = kind

    async def _stage(self, steps: list[Step], state: CheckState, kind: str) -> str | None:
        """One stage's list from a clean slate (SMTPD_CHECK_RESET); the reject or None."""
        state.reply_class = kind
        state.warn_if_reject = state.recursion = 0
        state.defer_if_reject = None
        if not steps:
            return None
        try:
            result = await self.evaluate(steps, state)
        except ServerError as exc:
            for line in filter(None, str(exc).split("\n")):
                log.warning("%s", line)
            return r.SERVER_CONFIGURATION_ERROR
        return None if result == PERMIT else result

    async def _client(self, state: CheckState) -> str | None:
        state.defer_if_permit = None
        reject = await self._stage(self.client, state, r.CLIENT)
        state.memory.dip_client = state.defer_if_permit
        return reject

    async def _helo(self, state: CheckState) -> str | None:
        if not state.helo:
            return None
        state.defer_if_permit = state.memory.dip_client
        reject = await self._stage(self.helo, state, r.HELO)
        state.memory.dip_helo = state.defer_if_permit
        return reject

    async def _sender(self, state: CheckState) -> str | None:
        if state.sender is None:
            return None
        state.defer_if_permit = state.memory.dip_client or state.memory.dip_helo
        reject = await self._stage(self.sender, state, r.SENDER)
        state.memory.dip_sender = state.defer_if_permit
        if reject is None and self.unlisted_sender and state.sender \
                and not state.memory.discard:  # smtpd_reject_unlisted_sender
            reply = await check_unlisted(self, state, state.sender, r.SENDER)
            reject = None if reply is None else finish(state, reply)
        return reject

    def _deferred(self, state: CheckState, reject: str | None) -> str | None:
        """Permission forced into deferral by an earlier defer_if_permit."""
        if reject is None and state.defer_if_permit is not None:
            return finish(state, state.defer_if_permit)
        return reject

    async def _logged(self, state: CheckState, stage: Any) -> str | None:
        try:
            reject = await stage(state)
        except TableRetry as exc:
            log.warning("%s", exc)
            reject = r.LOCAL_DATA_ERROR.format(host=self.cfg.get("myhostname"))
        if reject is not None:
            whatsup(state, "reject", reject)
            metrics.smtpd_rejects.labels(state.listener, state.where.lower(), reject[:3]).inc()
        return reject

    async def check_connect(self, state: CheckState) -> str | None:
        """At connect, with smtpd_delay_reject = no: the reject that replaces the greeting."""
        if self.delay_reject:
            return None
        return await self._logged(state, self._client)

    async def check_helo(self, state: CheckState) -> str | None:
        """At HELO/EHLO with smtpd_delay_reject = no (logged)."""
        if self.delay_reject:
            return None
        return await self._logged(state, self._helo)

    async def check_mail(self, state: CheckState) -> str | None:
        """At MAIL FROM with smtpd_delay_reject = no (logged)."""
        if self.delay_reject:
            return None
        return await self._logged(state, self._sender)

    async def check_rcpt(self, state: CheckState) -> str | None:
        """The reply that rejects ``state.recipient``, or None to accept it (not logged:
        the caller logs RCPT and VRFY rejects).

        A bare ``postmaster`` is always accepted (RFC 5321 section 4.5.1)."""
        if state.recipient.lower() == "postmaster":
            return None
        try:
            if self.delay_reject:
                for stage in (self._client, self._helo, self._sender):
                    reject = await stage(state)
                    if reject is not None:
                        return reject
            state.defer_if_permit = state.memory.dip_sender
            rcpt_lists = [self.relay, self.recipient]
            if not self.relay_first:  # smtpd_relay_before_recipient_restrictions = no
                rcpt_lists.reverse()
            reject = None
            for steps in rcpt_lists:
                reject = await self._stage(steps, state, r.RECIPIENT)
                if reject is not None:
                    break
            reject = self._deferred(state, reject)
            if reject is None and self.unlisted and not state.memory.discard:
                reject = await self.check_unlisted(state)
            return reject
        except TableRetry as exc:
            log.warning("%s", exc)
            return r.TEMPORARY_LOOKUP_FAILURE.format(what=state.recipient)

    async def check_etrn(self, state: CheckState) -> str | None:
        """The reply that refuses ETRN for ``state.etrn``, or None (not logged)."""
        try:
            if self.delay_reject:
                for stage in (self._client, self._helo):
                    reject = await stage(state)
                    if reject is not None:
                        return reject
            state.defer_if_permit = state.memory.dip_client or state.memory.dip_helo
            reject = await self._stage(self.etrn, state, r.ETRN)
            return self._deferred(state, reject)
        except TableRetry as exc:
            log.warning("%s", exc)
            return r.TEMPORARY_LOOKUP_FAILURE.format(what=state.etrn)

    async def _data_like(self, steps: list[Step], state: CheckState, kind: str) -> str | None:
        if state.rcpt_count > 1:
            state.recipient = ""  # the list applies to all recipients alike
        state.defer_if_permit = None
        reject = await self._stage(steps, state, kind)
        return self._deferred(state, reject)

    async def check_data(self, state: CheckState) -> str | None:
        """smtpd_data_restrictions at DATA or the first BDAT (logged)."""
        return await self._logged(state, lambda s: self._data_like(self.data, s, DATA))

    async def check_eod(self, state: CheckState) -> str | None:
        """smtpd_end_of_data_restrictions after the content (logged)."""
        return await self._logged(state, lambda s: self._data_like(self.eod, s, END_OF_DATA))
