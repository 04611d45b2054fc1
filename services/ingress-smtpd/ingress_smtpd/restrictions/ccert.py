"""Client certificates in restrictions (≈ permit_tls_clientcerts() and check_ccert_access()
in smtpd_check.c): relay_clientcerts and access tables keyed by the certificate's
or its public key's fingerprint (smtpd_tls_fingerprint_digest), and any
certificate the CAs trust."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingress_smtpd.restrictions.actions import table_result
from ingress_smtpd.restrictions.registry import Step, restriction
from ingress_smtpd.restrictions.state import PERMIT, CheckState, log
from postbus.maps.table import TableRetry

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy

CCERT = "Client certificate"


def _no_ccert_warning(policy: Policy, name: str) -> None:
    if not policy.cfg.bool("smtpd_tls_ask_ccert"):
        log.warning('%s is requested, but "smtpd_tls_ask_ccert = no"', name)


async def _permit(policy: Policy, state: CheckState, all_certs: bool, name: str) -> str | None:
    tls = state.tls
    if tls is None:
        return None
    if all_certs and tls.peer_trusted:
        return PERMIT
    if not tls.peer_present:
        _no_ccert_warning(policy, name)
        return None
    for print_ in (tls.fingerprint, tls.pkey_fingerprint):
        try:
            if print_ and await policy.relay_ccerts.find(print_) is not None:
                return PERMIT
        except TableRetry:
            log.warning("relay_clientcerts: lookup error for fingerprint '%s', "
                        "pkey fingerprint %s", tls.fingerprint, tls.pkey_fingerprint)
            raise
    return None


@restriction("permit_tls_clientcerts")
async def permit_tls_clientcerts(policy: Policy, state: CheckState, step: Step) -> str | None:
    return await _permit(policy, state, False, step.name)


@restriction("permit_tls_all_clientcerts")
async def permit_tls_all_clientcerts(policy: Policy, state: CheckState, step: Step
                                     ) -> str | None:
    return await _permit(policy, state, True, step.name)


@restriction("check_ccert_access", arg="table")
async def check_ccert_access(policy: Policy, state: CheckState, step: Step) -> str | None:
    assert step.maps is not None
    tls = state.tls
    if tls is None or not tls.peer_present:
        _no_ccert_warning(policy, step.name)
        return None
    table = ", ".join(t.spec for t in step.maps.tables)
    for print_ in (tls.fingerprint, tls.pkey_fingerprint):
        value = await step.maps.find(print_) if print_ else None
        if value is None:
            continue
        state.reply_class = CCERT
        state.ccert_name = tls.peer_cn
        result = await table_result(policy, state, table, value, print_, CCERT)
        if result is not None:
            return result
    return None
