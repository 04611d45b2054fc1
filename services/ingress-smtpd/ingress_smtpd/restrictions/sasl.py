"""The SASL restrictions (≈ smtpd_check.c's permit_sasl_auth() and the *_login_mismatch checks).

permit_sasl_authenticated lets a logged-in client through.  The login
mismatch checks read smtpd_sender_login_maps (MAIL FROM address -> owner
logins, comma or space separated), looked up with the resolved sender as
check_mail_addr_find() does:

- reject_authenticated_sender_login_mismatch: a logged-in client must own
  the sender address (an address without owner is refused too);
- reject_unauthenticated_sender_login_mismatch: an address with an owner
  needs a login;
- reject_known_sender_login_mismatch: the first for addresses with an
  owner, the second without a login;
- reject_sender_login_mismatch: the first and the second together.

check_sasl_access type:table looks the login name up in an access(5)
table: ``554 5.7.1 <alice>: SASL login name rejected: ...``.

Without smtpd_sasl_auth_enable they are ignored with Postfix's warning.
"""


from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ingress_smtpd.restrictions.actions import table_result
from ingress_smtpd.restrictions.registry import Step, restriction
from ingress_smtpd.restrictions.state import PERMIT, SASL_USER, CheckState
from postbus.maps.maps import Maps, open_maps
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy

log = logging.getLogger("postbus.smtpd")

LOGIN_MAPS = "smtpd_sender_login_maps"


@restriction("permit_sasl_authenticated")
async def permit_sasl_authenticated(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    enabled = policy.cfg.bool("smtpd_sasl_auth_enable")
    return PERMIT if enabled and state.sasl_method else None


def _login_maps(policy: Policy) -> Maps | None:
    """smtpd_sender_login_maps, opened on first use and kept with the policy."""
    cache = vars(policy)
    if "_sender_login_maps" not in cache:
        value = policy.cfg.get(LOGIN_MAPS)
        cache["_sender_login_maps"] = open_maps(value, LOGIN_MAPS) if value.strip() else None
    maps: Maps | None = cache["_sender_login_maps"]
    return maps


async def _owners(policy: Policy, state: CheckState, sender: str) -> list[str] | None:
    maps = _login_maps(policy)
    assert maps is not None
    reply = await policy.resolve(state, sender)  # TableRetry: 451, as reject_dict_retry()
    found = await policy.resolver.find(maps, reply.recipient)
    if found is None:
        return None
    return found.value.replace(",", " ").split()


async def _auth_mismatch(policy: Policy, state: CheckState, allow_unknown: bool) -> str | None:
    """≈ reject_auth_sender_login_mismatch()."""
    sender = state.sender or ""
    if _login_maps(policy) is None or not state.sasl_username:
        return None
    owners = await _owners(policy, state, sender)
    if owners is None and allow_unknown:
        return None
    user = state.sasl_username.casefold()
    if owners is not None and any(o.casefold() == user for o in owners):
        return None
    return r.LOGIN_NOT_OWNER.format(sender=sender, user=state.sasl_username)


async def _unauth_mismatch(policy: Policy, state: CheckState) -> str | None:
    """≈ reject_unauth_sender_login_mismatch()."""
    sender = state.sender or ""
    if _login_maps(policy) is None or state.sasl_username:
        return None
    if await _owners(policy, state, sender) is None:
        return None
    return r.LOGIN_NOT_LOGGED_IN.format(sender=sender)


def _active(policy: Policy, state: CheckState, name: str) -> bool:
    if not policy.cfg.bool("smtpd_sasl_auth_enable"):
        log.warning("restriction `%s' ignored: no SASL support", name)
        return False
    return bool(state.sender)


@restriction("reject_authenticated_sender_login_mismatch")
async def reject_authenticated_sender_login_mismatch(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    if not _active(policy, state, "reject_authenticated_sender_login_mismatch"):
        return None
    return await _auth_mismatch(policy, state, allow_unknown=False)


@restriction("reject_unauthenticated_sender_login_mismatch")
async def reject_unauthenticated_sender_login_mismatch(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    if not _active(policy, state, "reject_unauthenticated_sender_login_mismatch"):
        return None
    return await _unauth_mismatch(policy, state)


@restriction("reject_known_sender_login_mismatch")
async def reject_known_sender_login_mismatch(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    if not _active(policy, state, "reject_known_sender_login_mismatch"):
        return None
    if state.sasl_username:
        return await _auth_mismatch(policy, state, allow_unknown=True)
    return await _unauth_mismatch(policy, state)


@restriction("reject_sender_login_mismatch")
async def reject_sender_login_mismatch(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    """A restriction class in Postfix: the authenticated check, then the unauthenticated."""
    if not _active(policy, state, "reject_authenticated_sender_login_mismatch"):
        return None
    return await _auth_mismatch(policy, state, allow_unknown=False) \
        or await _unauth_mismatch(policy, state)


@restriction("check_sasl_access", arg="table")
async def check_sasl_access(policy: Policy, state: CheckState, step: Step) -> str | None:
    """≈ check_sasl_access(): the login name as the key, the name (non-printable
    characters as ``_``) in the reply."""
    assert step.maps is not None
    if not policy.cfg.bool("smtpd_sasl_auth_enable"):
        log.warning("restriction `check_sasl_access' ignored: no SASL support")
        return None
    if not state.sasl_username:
        return None
    value = await step.maps.find(state.sasl_username)
    if value is None:
        return None
    shown = "".join(c if c.isprintable() else "_" for c in state.sasl_username)
    table = ", ".join(t.spec for t in step.maps.tables) or step.maps.title
    return await table_result(policy, state, table, value, shown, SASL_USER)
