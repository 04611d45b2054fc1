"""check_{client,reverse_client_hostname,helo,sender,recipient}_{mx,ns,a}_access
(≈ smtpd_check.c's check_server_access()): the access table is searched for the
name's MX hosts, DNS servers or the name itself, and their addresses.

An OK result is not allowed (a name server or MX host is not the client's to
choose): Postfix's warnings, and ``451 4.3.5``.  A name that cannot be looked
up is logged and skipped (DUNNO), as in Postfix.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from ingress_smtpd.restrictions.actions import table_result
from ingress_smtpd.restrictions.dns_checks import NOTFOUND, OK, _query
from ingress_smtpd.restrictions.registry import Step, restriction
from ingress_smtpd.restrictions.state import PERMIT, CheckState, ServerError, log
from postbus.maps.addr_find import find_addr_access, find_domain_access
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy

_DNS_TEXT = {NOTFOUND: "Host not found", "retry": "Host not found, try again"}


def _is_addr(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


async def _servers(policy: Policy, domain: str, rtype: str) -> list[str] | None:
    """The hosts to check, or None (logged) when they cannot be had."""
    if rtype == "A":
        return [domain]
    status, records = await _query(policy, domain, rtype)
    if status == OK and rtype == "MX":
        hosts = [rec.split()[-1].rstrip(".") for rec in records]
        return None if hosts == [""] else hosts  # nullMX: nothing to check
    if status == NOTFOUND and rtype == "MX":
        return [domain]
    name = domain
    while status == NOTFOUND and rtype == "NS" and "." in name.strip("."):
        name = name.partition(".")[2]
        status, records = await _query(policy, name, rtype)
    if status != OK:
        log.warning("Unable to look up %s host for %s: %s", rtype, name,
                    _DNS_TEXT.get(status, "Host not found"))
        return None
    return [rec.rstrip(".") for rec in records]


async def _check(policy: Policy, state: CheckState, step: Step, name: str, rtype: str,
                 reply_name: str, kind: str) -> str | None:
    assert step.maps is not None
    table = ", ".join(t.spec for t in step.maps.tables)
    domain = name.rpartition("@")[2]
    if domain.startswith("["):
        if rtype == "NS" or not domain.endswith("]"):
            return None
        literal = domain[1:-1]
        literal = literal[5:] if literal[:5].lower() == "ipv6:" else literal
        if not _is_addr(literal):
            return None
        value = await find_addr_access(step.maps, literal)
        return None if value is None else await table_result(
            policy, state, table, value, literal, kind)
    servers = await _servers(policy, domain, rtype)
    for server in servers or []:
        if _is_addr(server):
            value = await find_addr_access(step.maps, server)
            candidates = [(value, server)]
        else:
            value = None if rtype == "A" else await find_domain_access(
                step.maps, server, parent_matches_subdomains=policy.access_parent)
            candidates = [(value, server)]
            if value is None:
                candidates = []
                for kind_of in ("A", "AAAA"):
                    status, addrs = await _query(policy, server, kind_of)
                    for addr in addrs if status == OK else []:
                        candidates.append((await find_addr_access(step.maps, addr), addr))
        for value, datum in candidates:
            if value is None:
                continue
            result = await table_result(policy, state, table, value, datum, kind)
            if result == PERMIT:  # forbid_allowlist()
                raise ServerError(f"restriction {step.name} returns OK for {reply_name}\n"
                                  "this is not allowed for security reasons\n"
                                  "use DUNNO instead of OK if you want to make an exception")
            return result
    return None


def _register(subject: str, rtype: str) -> None:
    name = f"check_{subject}_{rtype.lower()}_access"

    async def check(policy: Policy, state: CheckState, step: Step) -> str | None:
        if subject == "client":
            target, kind = state.client_name, r.CLIENT
            if target == "unknown":
                return None
            reply_name = state.namaddr
        elif subject == "reverse_client_hostname":
            target, kind = state.reverse_name or state.client_name, "Unverified Client host"
            if target == "unknown":
                return None
            reply_name = target
        elif subject == "helo":
            target, kind, reply_name = state.helo, r.HELO, state.helo
        elif subject == "sender":
            target, kind, reply_name = state.sender or "", r.SENDER, state.sender or ""
        else:
            target, kind, reply_name = state.recipient, r.RECIPIENT, state.recipient
        if not target:
            return None
        return await _check(policy, state, step, target, rtype, reply_name, kind)

    check.__name__ = name
    restriction(name, arg="table")(check)


for _subject in ("client", "reverse_client_hostname", "helo", "sender", "recipient"):
    for _rtype in ("MX", "NS", "A"):
        _register(_subject, _rtype)
