"""DANE for SMTP (RFC 7672): the TLS level ``dane`` / ``dane-only`` made concrete for one
MX host (≈ dane_init() in smtp_tls_policy.c and tls_dane_resolve() in tls_dane.c).

A DANE level is a wish until the MX host's addresses are known. Then, in Postfix's
order:

* DNSSEC lookups off (``smtp_dns_support_level`` is not ``dnssec``): a warning;
  ``dane`` is ``may``, ``dane-only`` a configuration problem;
* an MX RRset without the AD bit ("non DNSSEC destination"): ``may`` for ``dane``
  when smtp_tls_dane_insecure_mx_policy is ``may``; ``dane-only`` defers;
* TLSA records of ``_<port>._tcp.<MX host>``, looked up only when the host's
  address records are secure; a failing lookup defers (``4.7.5 TLSA lookup
  error for host:port``); none, or an insecure answer: "no TLSA records found",
  ``may`` for ``dane``;
* records, but none usable for SMTP (PKIX-TA/PKIX-EE, unknown selectors or
  matching types): "TLSA records unusable", ``encrypt`` for ``dane``;
* usable records: mandatory TLS authenticated by them
  (:mod:`delivery_smtp.dane_match`), SNI the MX host name. Under an insecure MX
  RRset that is Postfix's "half-dane" (logged as ``Trusted``, not ``Verified``),
  or ``encrypt`` when smtp_tls_dane_insecure_mx_policy says so.

Where ``dane-only`` cannot have DANE, the MX host is skipped with the reason
(``4.7.5 no TLSA records found`` ...), as Postfix does. As with Postfix, the
resolver is trusted for the AD bit; nothing is validated here. A TLSA name that
is a CNAME is looked up under its original name only.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import dns.exception
import dns.resolver

from delivery_smtp.addr import HostResolver, Target
from delivery_smtp.dane_match import Tlsa
from delivery_smtp.tls_policy import PROBLEM, TlsPolicies, TlsPolicy
from postbus.config.loader import Config
from postbus.delivery import Outcome

log = logging.getLogger("postbus.delivery")

_CONFIG, _DEST, _CANTAUTH = 0, 1, 2  # NONDANE_CONFIG, NONDANE_DEST, DANE_CANTAUTH


class TlsaLookupError(Exception):
    pass


def insecure_mx_policy(cfg: Config) -> str:
    """smtp_tls_dane_insecure_mx_policy (its default depends on smtp_tls_security_level)."""
    value = cfg.get("smtp_tls_dane_insecure_mx_policy").strip().lower()
    return value if value in ("may", "encrypt", "dane") else "dane"


async def tlsa_records(resolver: HostResolver, host: str, port: int) -> list[Tlsa] | None:
    """The secure TLSA records of ``_port._tcp.host`` (None: none, or not secure);
    TlsaLookupError when the DNS cannot say (SERVFAIL, timeout)."""
    name = f"_{port}._tcp.{host.rstrip('.')}"
    try:
        answer = await resolver.resolver.resolve(name, "TLSA", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        raise TlsaLookupError(str(exc)) from exc
    if not resolver.secure(answer):
        return None
    return [Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer]


async def settle(policy: TlsPolicy, target: Target, dest: str, resolver: HostResolver,
                 policies: TlsPolicies, mx_policy: str) -> TlsPolicy | Outcome:
    """The policy a DANE-level ``policy`` comes to for ``target``, or why it is skipped."""
    level = policy.level

    def incompat(kind: int, text: str) -> TlsPolicy | Outcome:  # ≈ dane_incompat()
        if kind == _CONFIG:
            log.warning("%s", text)
        if level == "dane":
            fallback = "encrypt" if kind == _CANTAUTH else "may"
            return policies.make(fallback, dict(policy.attrs), dest, policy.site)
        return PROBLEM if kind == _CONFIG else Outcome("deferred", "4.7.5", text)

    if target.port == 0:
        log.warning('%s: the "dane" security level is invalid for delivery via unix-domain '
                    "sockets", dest)
        return PROBLEM
    if not resolver.dnssec:
        return incompat(_CONFIG, f"{dest}: {level} configured with dnssec lookups disabled")
    insecure_mx = target.mx_secure is False
    if insecure_mx and (level == "dane-only" or mx_policy == "may"):
        return incompat(_DEST, "non DNSSEC destination")
    try:
        records = await tlsa_records(resolver, target.host, target.port) \
            if target.secure else None
    except TlsaLookupError:
        return Outcome("deferred", "4.7.5", f"TLSA lookup error for {target.host}:{target.port}")
    if not records:
        return incompat(_DEST, "no TLSA records found")
    usable = tuple(r for r in records if r.usable)
    if not usable:
        return incompat(_CANTAUTH, "TLSA records unusable")
    half = False
    if insecure_mx:
        if mx_policy == "encrypt":
            return incompat(_CANTAUTH, "Verification not possible, MX RRset is insecure")
        half = True
    made = policies.make("dane", dict(policy.attrs), dest, policy.site)
    if isinstance(made, Outcome):
        return made
    return replace(made, level="half-dane" if half else "dane", tlsa=usable, sni="hostname")
