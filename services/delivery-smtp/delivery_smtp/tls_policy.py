"""The TLS policy for one next hop (≈ smtp_tls_policy.c).

The level is smtp_tls_security_level unless smtp_tls_policy_maps has an
entry for the next-hop destination: the verbatim next hop
(``[mx.example.com]:587``, looked up alone), or the recipient domain and
then its parent domains with a leading dot (``.example.com``). An entry
is a level and attributes, separated by spaces or commas::

    example.com     secure match=.example.com:example.net protocols=>=TLSv1.2
    [10.0.0.1]:587  encrypt ciphers=high exclude=3DES

``match`` (verify and secure only, may repeat), ``protocols``,
``ciphers``, ``exclude`` and ``servername`` (the TLS SNI name:
``hostname``, ``nexthop`` or a name; none by default, as Postfix) replace
the main.cf defaults for that destination. Anything Postfix would refuse (an unknown level or
attribute, a repeated one, an empty value, ``match`` below verify, a
table that cannot answer) defers with Postfix's warning and ``4.7.5
client TLS configuration problem``; so do the level and attributes
Postbus does not build yet (fingerprint; tafile, connection_reuse), with a
warning saying so. ``dane`` and ``dane-only`` are settled per MX host once
its addresses are known (:mod:`delivery_smtp.dane`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from delivery_smtp.dane_match import Tlsa
from postbus.config.loader import Config
from postbus.delivery import Outcome
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry

log = logging.getLogger("postbus.delivery")

LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "verify", "secure")
DANE_LEVELS = ("dane", "dane-only")
NOT_BUILT = ("fingerprint",)
PROBLEM = Outcome("deferred", "4.7.5", "client TLS configuration problem")
NOT_BUILT_ATTRS = ("tafile", "connection_reuse")
_SEP = re.compile(r"[,\s]+")
_HOSTNAME = re.compile(r"(?=.{1,255}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


@dataclass(frozen=True)
class TlsPolicy:
    """What one destination gets: the level, and the TLS settings that go with it."""

    level: str
    protocols: str = ""
    grade: str = ""
    exclude: str = ""  # OpenSSL cipher names and aliases to leave out
    match: tuple[str, ...] = ()  # certificate name patterns (verify, secure)
    sni: str = ""  # servername: "", "hostname", "nexthop" or a name
    site: bool = field(default=False, compare=False)  # from a table entry: wins over MTA-STS
    sts: str = ""  # MTA-STS mode behind this policy: "", "enforce" or "testing"
    attrs: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # the table's
    tlsa: tuple[Tlsa, ...] = ()  # DANE (level dane or half-dane): the MX host's usable TLSA

    @property
    def required(self) -> bool:
        """TLS or nothing (encrypt and up): never falls back to plain text."""
        return self.level in ("encrypt", "verify", "secure", *DANE_LEVELS, "half-dane")

    @property
    def must_match(self) -> bool:
        """The server certificate must be trusted and name a match pattern (or match
        the TLSA records)."""
        return self.level in ("verify", "secure", *DANE_LEVELS, "half-dane")


class _Invalid(Exception):
    pass


class TlsPolicies:
    """main.cf's TLS defaults and the policy table of one transport."""

    def __init__(self, cfg: Config, lmtp: bool = False) -> None:
        table = "lmtp_tls_policy_maps" if lmtp else "smtp_tls_policy_maps"
        self.maps: Maps = open_maps(cfg.get(table), table)
        level = "lmtp_tls_security_level" if lmtp else "smtp_tls_security_level"
        self.level = cfg.get(level).strip().lower() or "none"
        self.protocols = cfg.get("smtp_tls_protocols")
        self.mandatory_protocols = cfg.get("smtp_tls_mandatory_protocols")
        self.grade = cfg.get("smtp_tls_ciphers").strip().lower()
        self.mandatory_grade = cfg.get("smtp_tls_mandatory_ciphers").strip().lower()
        self.exclude = cfg.get("smtp_tls_exclude_ciphers")
        self.mandatory_exclude = cfg.get("smtp_tls_mandatory_exclude_ciphers")
        self.verify_match = cfg.get("smtp_tls_verify_cert_match")
        self.secure_match = cfg.get("smtp_tls_secure_cert_match")
        self.sni = cfg.get("lmtp_tls_servername" if lmtp else "smtp_tls_servername").strip()

    async def policy(self, dest: str, domain: bool) -> TlsPolicy | Outcome:
        """The policy for next hop ``dest`` (``domain``: a domain, whose parents are
        looked up too), or the outcome that defers its mail. Not cached here: the
        tables' own cache sees ``postbus postmap`` changes at once."""
        level, attrs, site = self.level, dict[str, str](), False
        if self.maps:
            try:
                found = await self._lookup(dest, domain)
            except _Invalid:
                return PROBLEM
            if found is not None:
                (level, attrs), site = found, True
        return self.make(level, attrs, dest, site)

    def make(self, level: str, attrs: dict[str, str], dest: str,
             site: bool = False) -> TlsPolicy | Outcome:
        """The policy of ``level`` with ``attrs`` over main.cf's defaults."""
        if level in NOT_BUILT:
            log.warning("TLS security level \"%s\" for %s is not supported yet by Postbus",
                        level, dest)
            return PROBLEM
        if level == "none":
            return TlsPolicy("none", site=site)
        sni = attrs.get("servername", self.sni)
        if sni and not _HOSTNAME.fullmatch(sni):
            log.warning('"smtp_tls_servername = %s" specifies an invalid hostname', sni)
            return PROBLEM
        mandatory = level != "may"
        exclude = attrs.get("exclude")
        if exclude is None:
            exclude = " ".join(w for w in (self.exclude, self.mandatory_exclude if mandatory
                                           else "") if w)
        also = "eNULL" if level == "encrypt" else "" if level == "may" else "aNULL"
        matches = attrs.get("match", "")
        if not matches and level in ("verify", "secure"):
            matches = self.verify_match if level == "verify" else self.secure_match
        return TlsPolicy(
            level,
            protocols=attrs.get("protocols", self.mandatory_protocols if mandatory
                                else self.protocols),
            grade=attrs.get("ciphers", self.mandatory_grade if mandatory else self.grade)
            .lower(),
            exclude=" ".join(w for w in (exclude, also) if w),
            match=tuple(m for m in re.split(r"[,\s:]+", matches) if m),
            sni=sni,
            site=site,
            attrs=tuple(attrs.items()),
        )

    async def _lookup(self, dest: str, domain: bool) -> tuple[str, dict[str, str]] | None:
        """The entry for ``dest``, then for a domain its ``.parent`` names (≈ tls_policy_lookup)."""
        name = dest
        while True:
            where = f'{self.maps.title}, next-hop destination "{name}"'
            try:
                value = await self.maps.find(name)
            except TableRetry as exc:
                log.warning("%s: policy table lookup error", where)
                raise _Invalid() from exc
            if value is not None:
                return _parse(value, where)
            dot = name.find(".", 1)
            if not domain or dot < 0:
                return None
            name = name[dot:]


def _parse(value: str, where: str) -> tuple[str, dict[str, str]]:
    """A policy entry's level and attributes, checked as Postfix checks them."""
    words = [w for w in _SEP.split(value) if w]
    if not words:
        log.warning("%s: invalid empty policy", where)
        raise _Invalid()
    level = words[0].lower()
    if level not in LEVELS and level not in NOT_BUILT:
        log.warning('%s: invalid security level "%s"', where, words[0])
        raise _Invalid()
    if level == "none":
        for word in words[1:]:
            log.warning('%s: ignoring attribute "%s" with TLS disabled', where, word)
        return level, {}
    attrs: dict[str, str] = {}
    for word in words[1:]:
        name, eq, val = word.partition("=")
        if not eq:
            log.warning('%s: malformed attribute/value pair "%s": missing \'=\' after '
                        'attribute name', where, word)
            raise _Invalid()
        name = name.lower()
        if name in NOT_BUILT_ATTRS:
            log.warning('%s: attribute "%s" is not supported yet by Postbus', where, name)
            raise _Invalid()
        if name not in ("ciphers", "protocols", "match", "exclude", "servername"):
            log.warning('%s: invalid attribute name: "%s"', where, name)
            raise _Invalid()
        if not val and name in ("ciphers", "match"):
            log.warning('%s: attribute "%s" has empty value', where, name)
            raise _Invalid()
        if name == "match":
            if level not in ("verify", "secure"):
                log.warning('%s: attribute "%s" invalid at security level "%s"',
                            where, name, level)
                raise _Invalid()
            attrs[name] = f"{attrs[name]}:{val}" if name in attrs else val
            continue
        if name in attrs:
            log.warning('%s: attribute "%s" is specified multiple times', where, name)
            raise _Invalid()
        if name == "servername" and not _HOSTNAME.fullmatch(val):
            log.warning('%s: "%s=%s" specifies an invalid hostname', where, name, val)
            raise _Invalid()
        attrs[name] = val
    return level, attrs
