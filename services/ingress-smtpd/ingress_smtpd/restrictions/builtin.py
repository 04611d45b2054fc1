"""The restrictions that need no DNS and no server: permit/reject/defer, the
defer_if_* pseudo actions, mynetworks, relay control, the access tables and the
fully-qualified checks (≈ the matching branches of generic_checks())."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ingress_smtpd.restrictions.actions import defer_if_permit, table_result
from ingress_smtpd.restrictions.registry import Step, restriction
from ingress_smtpd.restrictions.state import PERMIT, CheckState, reject_text
from postbus.maps.addr_find import find_access, find_client_access, find_domain_access
from postbus.smtp import replies as r
from postbus.smtp.address import quote_local, valid_domain

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy


@restriction("permit")
async def permit(policy: Policy, state: CheckState, step: Step) -> str | None:
    return PERMIT


@restriction("reject")
async def reject(policy: Policy, state: CheckState, step: Step) -> str | None:
    return reject_text(state, policy.cfg.int("reject_code"), "5.7.1", r.ACCESS_DENIED)


@restriction("defer")
async def defer(policy: Policy, state: CheckState, step: Step) -> str | None:
    return reject_text(state, policy.cfg.int("defer_code"), "4.7.1", r.ACCESS_DENIED)


@restriction("defer_if_permit")
async def defer_if_permit_(policy: Policy, state: CheckState, step: Step) -> str | None:
    defer_if_permit(state, reject_text(state, 450, "4.7.0", "defer_if_permit requested"))
    return None


@restriction("defer_if_reject")
async def defer_if_reject(policy: Policy, state: CheckState, step: Step) -> str | None:
    if state.defer_if_reject is None:
        state.defer_if_reject = reject_text(state, 450, "4.7.0", "defer_if_reject requested")
    return None


@restriction("permit_mynetworks")
async def permit_mynetworks(policy: Policy, state: CheckState, step: Step) -> str | None:
    return PERMIT if await policy.in_mynetworks(state.client_addr) else None


async def _unauth(policy: Policy, state: CheckState, code: int, dsn: str) -> str | None:
    if not state.recipient or await policy.auth_destination(state):
        return None
    return r.RELAY_DENIED.format(code=code, dsn=dsn, address=state.recipient)


@restriction("reject_unauth_destination")
async def reject_unauth_destination(policy: Policy, state: CheckState, step: Step) -> str | None:
    return await _unauth(policy, state, policy.cfg.int("relay_domains_reject_code"), "5.7.1")


@restriction("defer_unauth_destination")
async def defer_unauth_destination(policy: Policy, state: CheckState, step: Step) -> str | None:
    return await _unauth(policy, state, 454, "4.7.1")  # fixed in Postfix too


@restriction("permit_auth_destination")
async def permit_auth_destination(policy: Policy, state: CheckState, step: Step) -> str | None:
    return PERMIT if state.recipient and await policy.auth_destination(state) else None


@restriction("reject_unlisted_recipient")
async def reject_unlisted_recipient(policy: Policy, state: CheckState, step: Step) -> str | None:
    return await policy.check_unlisted(state) if state.recipient else None


async def _check_address(
    policy: Policy, state: CheckState, step: Step, address: str, kind: str
) -> str | None:
    """access(5) lookup of an envelope address, then the action it names."""
    assert step.maps is not None
    found = await find_access(
        step.maps, quote_local(address), recipient_delimiter=policy.delimiter,
        parent_matches_subdomains=policy.access_parent, null_key=policy.null_key,
    )
    if found is None:
        return None
    return await table_result(policy, state, _table(step), found.value, address, kind)


@restriction("check_recipient_access", arg="table")
async def check_recipient_access(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.recipient:
        return None
    return await _check_address(policy, state, step, state.recipient, r.RECIPIENT)


@restriction("check_sender_access", arg="table")
async def check_sender_access(policy: Policy, state: CheckState, step: Step) -> str | None:
    if state.sender is None:
        return None
    return await _check_address(policy, state, step, state.sender, r.SENDER)


@restriction("check_etrn_access", arg="table")
async def check_etrn_access(policy: Policy, state: CheckState, step: Step) -> str | None:
    assert step.maps is not None
    if not state.etrn:
        return None
    value = await find_domain_access(
        step.maps, state.etrn, parent_matches_subdomains=policy.access_parent
    )
    if value is None:
        return None
    return await table_result(policy, state, _table(step), value, state.etrn, r.ETRN)


@restriction("check_client_access", arg="table")
async def check_client_access(policy: Policy, state: CheckState, step: Step) -> str | None:
    assert step.maps is not None
    value = await find_client_access(
        step.maps, state.client_name, state.client_addr,
        parent_matches_subdomains=policy.access_parent,
    )
    if value is None:
        return None
    return await table_result(policy, state, _table(step), value, state.namaddr, r.CLIENT)


@restriction("check_helo_access", arg="table")
async def check_helo_access(policy: Policy, state: CheckState, step: Step) -> str | None:
    assert step.maps is not None
    if not state.helo:
        return None
    value = await find_domain_access(
        step.maps, state.helo, parent_matches_subdomains=policy.access_parent
    )
    if value is None:
        return None
    return await table_result(policy, state, _table(step), value, state.helo, r.HELO)


def _table(step: Step) -> str:
    """The table's name as Postfix's warnings give it: its type:name."""
    assert step.maps is not None
    return ", ".join(t.spec for t in step.maps.tables) or step.maps.title


def _non_fqdn(address: str) -> bool:
    domain = address.rpartition("@")[2]
    return "@" not in address or ("." not in domain and not domain.startswith("["))


@restriction("reject_non_fqdn_recipient")
async def reject_non_fqdn_recipient(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.recipient or not _non_fqdn(state.recipient):
        return None
    state.reply_class = r.RECIPIENT
    return reject_text(state, policy.cfg.int("non_fqdn_reject_code"), "5.5.2",
                       "need fully-qualified address")


@restriction("reject_non_fqdn_sender")
async def reject_non_fqdn_sender(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.sender or not _non_fqdn(state.sender):
        return None
    state.reply_class = r.SENDER
    return reject_text(state, policy.cfg.int("non_fqdn_reject_code"), "5.5.2",
                       "need fully-qualified address")


@restriction("warn_if_reject")
async def warn_if_reject(policy: Policy, state: CheckState, step: Step) -> str | None:
    return None  # a pseudo restriction: Policy.evaluate() sees it by name


@restriction("reject_unauth_pipelining")
async def reject_unauth_pipelining(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.ill_pipelining:
        return None
    return reject_text(state, 503, "5.5.0", "Improper use of SMTP command pipelining")


def _helo_literal(policy: Policy, state: CheckState) -> str | None:
    """reject_invalid_hostaddr() for a ``[address]`` HELO."""
    if valid_domain(state.helo):
        return None
    return reject_text(state, policy.cfg.int("invalid_hostname_reject_code"), "5.5.2",
                       "Invalid ip address")


@restriction("reject_invalid_helo_hostname")
async def reject_invalid_helo_hostname(policy: Policy, state: CheckState, step: Step
                                       ) -> str | None:
    if not state.helo:
        return None
    state.reply_class = r.HELO
    if state.helo.startswith("["):
        return _helo_literal(policy, state)
    if valid_domain(state.helo.removesuffix(".")):
        return None
    return reject_text(state, policy.cfg.int("invalid_hostname_reject_code"), "5.5.2",
                       "Invalid name")


@restriction("reject_non_fqdn_helo_hostname")
async def reject_non_fqdn_helo_hostname(policy: Policy, state: CheckState, step: Step
                                        ) -> str | None:
    if not state.helo:
        return None
    state.reply_class = r.HELO
    if state.helo.startswith("["):
        return _helo_literal(policy, state)
    name = state.helo.removesuffix(".")
    if valid_domain(name) and "." in name:
        return None
    return reject_text(state, policy.cfg.int("non_fqdn_reject_code"), "5.5.2",
                       "need fully-qualified hostname")


@restriction("reject_plaintext_session")
async def reject_plaintext_session(policy: Policy, state: CheckState, step: Step) -> str | None:
    if state.tls is not None:
        return None
    return f"{policy.cfg.int('plaintext_reject_code')} 4.7.1 Session encryption is required"


@restriction("reject_multi_recipient_bounce")
async def reject_multi_recipient_bounce(policy: Policy, state: CheckState, step: Step
                                        ) -> str | None:
    if state.sender != "" or state.rcpt_count <= (0 if state.where == "RCPT" else 1):
        return None
    return reject_text(state, policy.cfg.int("multi_recipient_bounce_reject_code"), "5.5.3",
                       "Multi-recipient bounce")


@restriction("check_reverse_client_hostname_access", arg="table")
async def check_reverse_client_hostname_access(policy: Policy, state: CheckState, step: Step
                                               ) -> str | None:
    assert step.maps is not None
    name = state.reverse_name or state.client_name
    value = await find_client_access(step.maps, name, state.client_addr,
                                     parent_matches_subdomains=policy.access_parent)
    if value is None:
        return None
    return await table_result(policy, state, _table(step), value, name,
                              "Unverified Client host")


@restriction("sleep", arg="seconds")
async def sleep(policy: Policy, state: CheckState, step: Step) -> str | None:
    await asyncio.sleep(step.arg)  # a pause for this session only
    return None


@restriction("reject_unlisted_sender")
async def reject_unlisted_sender(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.sender:
        return None
    from ingress_smtpd.restrictions.unlisted import check_unlisted
    return await check_unlisted(policy, state, state.sender, r.SENDER)
