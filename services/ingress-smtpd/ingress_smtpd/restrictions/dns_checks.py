"""The restrictions that ask the DNS (≈ reject_unknown_hostname(), reject_unknown_mailhost(),
reject_rbl_addr(), reject_rbl_domain(), permit_dnswl_addr() in smtpd_check.c).

Lookups go through dnspython to ``postbus_dns_servers`` (``host`` or
``host:port``; the system's resolver when unset).  A name that does not exist
rejects with the configured code; a lookup that fails for now (SERVFAIL, a
timeout) gives the 4xx form Postfix gives: through
unknown_helo_hostname_tempfail_action / unknown_address_tempfail_action
(``defer_if_permit`` by default, or ``defer``) for the unknown-name checks, a
DUNNO for a blocklist, a defer_if_reject for an allowlist.  Blocklist replies
follow default_rbl_reply (``$rbl_code Service unavailable; $rbl_class
[$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from typing import TYPE_CHECKING

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from ingress_smtpd.restrictions.actions import defer_if_permit, dsn_fix, dsn_split
from ingress_smtpd.restrictions.registry import Step, restriction
from ingress_smtpd.restrictions.state import PERMIT, CheckState, reject_text
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.dns_config import async_resolver
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy

OK, NOTFOUND, RETRY, NULLMX = "ok", "notfound", "retry", "nullmx"
TEMPFAIL_ACTIONS = ("defer_if_permit", "defer")


def make_resolver(cfg: Config) -> dns.asyncresolver.Resolver:
    return async_resolver(cfg.list("postbus_dns_servers"))


def tempfail_action(cfg: Config, param: str) -> str:
    value = cfg.get(param).strip().lower()
    if value not in TEMPFAIL_ACTIONS:
        raise ConfigError(f"{value!r} is not supported by Postbus (use defer_if_permit or "
                          "defer)", parameter=param)
    return value


async def _query(policy: Policy, name: str, rtype: str) -> tuple[str, list[str]]:
    try:
        answer = await policy.dns.resolve(name, rtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return NOTFOUND, []
    except (dns.exception.DNSException, OSError, ValueError):
        return RETRY, []
    records = [rr.to_text() for rr in answer.rrset] if answer.rrset is not None else []
    return (OK if records else NOTFOUND), records


async def _any(policy: Policy, name: str, types: tuple[str, ...]) -> str:
    """OK when one type has records (DNS_REQ_FLAG_STOP_OK), else RETRY if one failed."""
    status = NOTFOUND
    for rtype in types:
        found, records = await _query(policy, name, rtype)
        if found == OK:
            if rtype == "MX" and records == ["0 ."]:
                return NULLMX
            return OK
        if found == RETRY:
            status = RETRY
    return status


def _tempfail(state: CheckState, action: str, reply: str) -> str | None:
    if action == "defer":
        return reply
    defer_if_permit(state, reply)
    return None


async def _unknown_host(policy: Policy, state: CheckState, name: str) -> str | None:
    status = await _any(policy, name, ("A", "AAAA", "MX"))
    if status in (OK, NULLMX):
        return None
    if status == NOTFOUND:
        return reject_text(state, policy.cfg.int("unknown_hostname_reject_code"), "4.7.1",
                           "Host not found")
    return _tempfail(state, policy.helo_tempfail, reject_text(state, 450, "4.7.1",
                                                              "Host not found"))


_LITERAL = re.compile(r"\[(?:ipv6:)?([^\]]*)\]", re.I)


def _invalid_literal(policy: Policy, state: CheckState) -> str | None:
    match = _LITERAL.fullmatch(state.helo)
    try:
        if match is None:
            raise ValueError(state.helo)
        ipaddress.ip_address(match.group(1))
        return None
    except ValueError:
        return reject_text(state, policy.cfg.int("invalid_hostname_reject_code"), "5.5.2",
                           "Invalid ip address")


@restriction("reject_unknown_helo_hostname")
async def reject_unknown_helo_hostname(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.helo:
        return None
    state.reply_class = r.HELO
    if state.helo.startswith("["):
        return _invalid_literal(policy, state)
    return await _unknown_host(policy, state, state.helo)


async def _unknown_address(policy: Policy, state: CheckState, address: str, kind: str
                           ) -> str | None:
    """reject_unknown_address(): the domain of an address that is not ours must have an
    MX or an address record."""
    reply = await policy.resolve(state, address)
    if "@" not in reply.recipient or reply.final:
        return None
    domain = reply.recipient.rpartition("@")[2]
    if domain.startswith("[") and domain.endswith("]"):
        return None
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    state.reply_class = kind
    sender = kind == r.SENDER
    status = await _any(policy, domain, ("MX", "A", "AAAA"))
    if status == OK:
        return None
    if status == NULLMX:
        return reject_text(state, 550 if sender else 556, "4.7.27" if sender else "4.1.10",
                           f"Domain {domain} does not accept mail (nullMX)")
    dsn = "4.1.8" if sender else "4.1.2"
    if status == NOTFOUND:
        return reject_text(state, policy.cfg.int("unknown_address_reject_code"), dsn,
                           "Domain not found")
    return _tempfail(state, policy.address_tempfail, reject_text(state, 450, dsn,
                                                                 "Domain not found"))


@restriction("reject_unknown_sender_domain")
async def reject_unknown_sender_domain(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.sender:
        return None
    return await _unknown_address(policy, state, state.sender, r.SENDER)


@restriction("reject_unknown_recipient_domain")
async def reject_unknown_recipient_domain(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    if not state.recipient:
        return None
    return await _unknown_address(policy, state, state.recipient, r.RECIPIENT)


def _client_unknown(policy: Policy, state: CheckState, status: str, dsn: str, what: str
                    ) -> str | None:
    if status == OK:
        return None
    code = policy.cfg.int("unknown_client_reject_code") if status == NOTFOUND else 450
    return f"{code} {dsn} Client host rejected: cannot find your {what}, [{state.client_addr}]"


async def _peer_status(policy: Policy, state: CheckState) -> tuple[str, str]:
    """(name status, reverse name status) of an "unknown" client (≈ smtpd_peer.c):
    the PTR lookup, then its forward confirmation, each NOTFOUND or RETRY (a
    temporary failure: the 450 form); without smtpd_peername_lookup both are
    NOTFOUND. Looked up once per session."""
    memory = state.memory
    if memory.peer_status:
        name_status, _, reverse_status = memory.peer_status.partition(" ")
        return name_status, reverse_status
    if not policy.cfg.bool("smtpd_peername_lookup"):
        return NOTFOUND, NOTFOUND
    ptr_status, names = await _query(policy, _reversed(state.client_addr) +
                                     ("ip6.arpa" if ":" in state.client_addr else "in-addr.arpa"),
                                     "PTR")
    reverse_status = name_status = ptr_status
    if ptr_status == OK:
        kind = "AAAA" if ":" in state.client_addr else "A"
        found, addrs = await _query(policy, names[0], kind)
        confirmed = found == OK and any(
            ipaddress.ip_address(a) == ipaddress.ip_address(state.client_addr) for a in addrs)
        name_status = OK if confirmed else RETRY if found == RETRY else NOTFOUND
    memory.peer_status = f"{name_status} {reverse_status}"
    return name_status, reverse_status


@restriction("reject_unknown_client_hostname")
async def reject_unknown_client_hostname(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    if state.client_name != "unknown":
        return None
    status = (await _peer_status(policy, state))[0]
    return _client_unknown(policy, state, NOTFOUND if status == OK else status, "4.7.25",
                           "hostname")


@restriction("reject_unknown_reverse_client_hostname")
async def reject_unknown_reverse_client_hostname(
    policy: Policy, state: CheckState, step: Step
) -> str | None:
    if (state.reverse_name or state.client_name) != "unknown":
        return None
    status = (await _peer_status(policy, state))[1]
    return _client_unknown(policy, state, status, "4.7.1", "reverse hostname")


# -- DNS block and allow lists -------------------------------------------------------------


def _reversed(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.version == 6:
        return ".".join(reversed(ip.exploded.replace(":", ""))) + "."
    return ".".join(reversed(addr.split("."))) + "."


def _filter(spec: str) -> tuple[str, str]:
    """``zen.example=127.0.0.[2..11]`` -> (domain, byte pattern)."""
    domain, _, codes = spec.partition("=")
    return domain, codes


def _code_matches(address: str, codes: str) -> bool:
    """rbl_match_addr(): each octet equal, or within ``[a..b]``/``[a;b;c]``."""
    if not codes:
        return True
    want = re.findall(r"\[[^\]]*\]|[^.]+", codes)
    have = address.split(".")
    if len(want) != len(have):
        return False
    for pattern, octet in zip(want, have, strict=True):
        if pattern.startswith("["):
            allowed: set[str] = set()
            for part in pattern[1:-1].split(";"):
                low, dots, high = part.partition("..")
                if dots and low.isdigit() and high.isdigit():
                    allowed.update(str(n) for n in range(int(low), int(high) + 1))
                else:
                    allowed.add(part)
            if octet not in allowed:
                return False
        elif pattern != octet:
            return False
    return True


async def _listed(policy: Policy, query: str, codes: str) -> tuple[str, str]:
    """(OK with the TXT reason | NOTFOUND | RETRY) for one DNSxL query."""
    status, records = await _query(policy, query, "A")
    if status != OK:
        return status, ""
    if not any(_code_matches(a, codes) for a in records):
        return NOTFOUND, ""
    _, texts = await _query(policy, query, "TXT")
    reason = " ".join(t.strip('"') for t in texts[:1])
    return OK, reason


_MACRO = re.compile(r"\$(?:\{(\w+)(?:([?:])([^}]*))?\}|(\w+))")


def expand_rbl_reply(template: str, values: dict[str, str]) -> str:
    """mac_expand() for the rbl reply: ``$name``, ``${name}``, ``${name?text}``,
    ``${name:text}`` (nested ``$name`` inside the text expanded once)."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = values.get(name, "")
        if match.group(2) == "?":
            return expand_rbl_reply(match.group(3), values) if value else ""
        if match.group(2) == ":":
            return value or expand_rbl_reply(match.group(3), values)
        return value

    return _MACRO.sub(one, template)


def _rbl_reply(policy: Policy, state: CheckState, domain: str, what: str, reason: str) -> str:
    values = {"rbl_code": str(policy.cfg.int("maps_rbl_reject_code")), "rbl_domain": domain,
              "rbl_what": what, "rbl_class": state.reply_class, "rbl_reason": reason,
              "rbl_txt": reason, "client_address": state.client_addr,
              "client_name": state.client_name, "helo_name": state.helo,
              "sender": state.sender or "", "recipient": state.recipient}
    text = expand_rbl_reply(policy.cfg.get("default_rbl_reply"), values)
    code = text[:3]
    if not (code.isdigit() and code[0] in "45" and text[3:4] == " "):
        return "450 4.7.1 Service unavailable"
    dsn, msg = dsn_split(text[4:], "4.7.1")
    return f"{code} {dsn_fix(dsn, state.reply_class)} {msg or 'Service unavailable'}"


@restriction("reject_rbl_client", arg="domain")
async def reject_rbl_client(policy: Policy, state: CheckState, step: Step) -> str | None:
    domain, codes = _filter(step.arg)
    status, reason = await _listed(policy, _reversed(state.client_addr) + domain, codes)
    if status != OK:
        return None
    state.reply_class = r.CLIENT
    return _rbl_reply(policy, state, domain, state.client_addr, reason)


@restriction("permit_dnswl_client", arg="domain")
async def permit_dnswl_client(policy: Policy, state: CheckState, step: Step) -> str | None:
    if state.where == "RCPT" and state.recipient and not await policy.auth_destination(state):
        return None  # never a way around relay control
    domain, codes = _filter(step.arg)
    status, _ = await _listed(policy, _reversed(state.client_addr) + domain, codes)
    if status == RETRY and state.defer_if_reject is None:
        state.defer_if_reject = (f"450 4.7.1 <{state.client_addr}>: {r.CLIENT} rejected: "
                                 "Service unavailable")
    return PERMIT if status == OK else None


def _rhs_domain(what: str) -> str | None:
    domain = what.rpartition("@")[2] if "@" in what else what
    if not domain or domain.startswith("["):
        return None
    if domain.rpartition(".")[2].isdigit():
        return None
    return domain


async def _rhsbl(policy: Policy, state: CheckState, step: Step, what: str, kind: str
                 ) -> str | None:
    domain = _rhs_domain(what)
    if domain is None or (what == "unknown" and kind in (r.CLIENT, "Unverified Client host")):
        return None
    rbl, codes = _filter(step.arg)
    status, reason = await _listed(policy, f"{domain}.{rbl}", codes)
    if status != OK:
        return None
    state.reply_class = kind
    return _rbl_reply(policy, state, rbl, what, reason)


@restriction("reject_rhsbl_client", arg="domain")
async def reject_rhsbl_client(policy: Policy, state: CheckState, step: Step) -> str | None:
    if state.client_name == "unknown":
        return None
    return await _rhsbl(policy, state, step, state.client_name, r.CLIENT)


@restriction("reject_rhsbl_reverse_client", arg="domain")
async def reject_rhsbl_reverse_client(policy: Policy, state: CheckState, step: Step
                                      ) -> str | None:
    name = state.reverse_name or state.client_name
    if name == "unknown":
        return None
    return await _rhsbl(policy, state, step, name, "Unverified Client host")


@restriction("reject_rhsbl_helo", arg="domain")
async def reject_rhsbl_helo(policy: Policy, state: CheckState, step: Step) -> str | None:
    return await _rhsbl(policy, state, step, state.helo, r.HELO) if state.helo else None


@restriction("reject_rhsbl_sender", arg="domain")
async def reject_rhsbl_sender(policy: Policy, state: CheckState, step: Step) -> str | None:
    return await _rhsbl(policy, state, step, state.sender, r.SENDER) if state.sender else None


@restriction("reject_rhsbl_recipient", arg="domain")
async def reject_rhsbl_recipient(policy: Policy, state: CheckState, step: Step) -> str | None:
    if not state.recipient:
        return None
    return await _rhsbl(policy, state, step, state.recipient, r.RECIPIENT)


@restriction("permit_rhswl_client", arg="domain")
async def permit_rhswl_client(policy: Policy, state: CheckState, step: Step) -> str | None:
    if state.client_name == "unknown":
        return None
    if state.where == "RCPT" and state.recipient and not await policy.auth_destination(state):
        return None  # never a way around relay control
    domain = _rhs_domain(state.client_name)
    if domain is None:
        return None
    rbl, codes = _filter(step.arg)
    status, _ = await _listed(policy, f"{domain}.{rbl}", codes)
    if status == RETRY and state.defer_if_reject is None:
        state.defer_if_reject = (f"450 4.7.1 <{state.client_name}>: {r.CLIENT} rejected: "
                                 "Service unavailable")
    return PERMIT if status == OK else None
