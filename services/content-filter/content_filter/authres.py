"""DKIM, SPF and DMARC verification as one Authentication-Results header (RFC 8601).

DKIM: every DKIM-Signature is checked with dkimpy; the key records are
fetched first through dnspython (postbus_dns_servers, as the rest of
Postbus asks the DNS) and handed to dkimpy, so no lookup blocks the loop.
SPF: pyspf, in a thread, for the client address, HELO and envelope sender
the message arrived with (mail from inside: no SPF result). DMARC: the
From: domain's ``_dmarc`` record (else its organizational domain's, taken
as the last two labels: there is no public suffix list here), passing when
an aligned (relaxed) DKIM or SPF pass exists.

Authentication-Results headers that already carry our authserv-id are
removed (RFC 8601 section 5: a forged one must not be trusted downstream).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dkim
import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver
import spf

from postbus import metrics
from postbus.config.loader import Config
from postbus.dns_config import async_resolver, sync_resolver

log = logging.getLogger("postbus.content-filter")

_TAG = re.compile(rb"\s*([a-zA-Z][a-zA-Z0-9_]*)\s*=\s*([^;]*)")
_AR_NAME = b"authentication-results"


def resolvers(cfg: Config) -> tuple[dns.asyncresolver.Resolver, dns.resolver.Resolver]:
    """An async resolver (DKIM keys, DMARC) and a sync one (pyspf), same servers."""
    servers = cfg.list("postbus_dns_servers")
    return async_resolver(servers), sync_resolver(servers)


Answers = list[tuple[tuple[str, str], object]]


def spf_lookup(resolver: dns.resolver.Resolver) -> Callable[..., Answers]:
    """pyspf's DNSLookup (its dnspython variant) on our resolver instead of the system's."""

    def lookup(name: str, qtype: str, strict: bool = True, timeout: float = 30
               ) -> Answers:
        out: Answers = []
        try:
            for rdata in resolver.resolve(name, qtype, lifetime=timeout):
                value: object
                if qtype in ("A", "AAAA"):
                    value = rdata.address
                elif qtype == "MX":
                    value = (rdata.preference, rdata.exchange)
                elif qtype == "PTR":
                    value = rdata.target.to_text(True)
                elif qtype in ("TXT", "SPF"):
                    value = rdata.strings
                else:
                    continue
                out.append(((name, qtype), value))
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            pass
        except dns.exception.DNSException as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        return out

    return lookup


@dataclass
class Results:
    """The method results, each ``(method, result, properties)``."""

    items: list[tuple[str, str, str]] = field(default_factory=list)

    def header(self, authserv_id: str) -> bytes:
        if not self.items:
            return f"Authentication-Results: {authserv_id}; none\r\n".encode()
        parts = [f"{m}={r}" + (f" {p}" if p else "") for m, r, p in self.items]
        return ("Authentication-Results: " + authserv_id + ";\r\n\t"
                + ";\r\n\t".join(parts) + "\r\n").encode("utf-8", "surrogateescape")


def sig_tags(value: bytes) -> dict[bytes, bytes]:
    tags: dict[bytes, bytes] = {}
    for match in _TAG.finditer(re.sub(rb"\r?\n[ \t]", b" ", value)):
        tags.setdefault(match.group(1).lower(), re.sub(rb"\s+", b"", match.group(2)))
    return tags


def org_domain(domain: str) -> str:
    """The organizational domain, approximated as the last two labels."""
    return ".".join(domain.rstrip(".").lower().split(".")[-2:])


def aligned(a: str, b: str) -> bool:
    """Relaxed DMARC alignment (same organizational domain)."""
    return bool(a) and bool(b) and org_domain(a) == org_domain(b)


def strip_own_results(headers: list[tuple[bytes, bytes]], authserv_id: str) -> list[int]:
    """Indexes of Authentication-Results headers that claim our authserv-id."""
    ours = authserv_id.lower().encode()
    drop = []
    for i, (name, value) in enumerate(headers):
        if name.lower() == _AR_NAME:
            claimed = value.strip().split(b";", 1)[0].split()[:1]
            if claimed and claimed[0].lower() == ours:
                drop.append(i)
    return drop


class Verifier:
    def __init__(self, cfg: Config) -> None:
        self.enabled = cfg.bool("postbus_authres_verify")
        self.authserv_id = cfg.get("postbus_authserv_id") or cfg.get("myhostname")
        self.aresolver, self.resolver = resolvers(cfg)
        spf.DNSLookup = spf_lookup(self.resolver)  # pyspf's one DNS hook (module-wide)

    async def txt(self, name: str) -> tuple[str, list[bytes]]:
        """``ok``/``none``/``temperror`` and the TXT strings (each record joined)."""
        try:
            answer = await self.aresolver.resolve(name, "TXT", raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return "none", []
        except (dns.exception.DNSException, OSError) as exc:
            log.info("TXT lookup of %s: %s", name, exc)
            return "temperror", []
        return "ok", [b"".join(r.strings) for r in answer]

    async def dkim_results(self, message: bytes, headers: list[tuple[bytes, bytes]]
                           ) -> list[tuple[str, str, str]]:
        out = []
        sigs = [v for n, v in headers if n.lower() == b"dkim-signature"]
        for idx, value in enumerate(sigs):
            tags = sig_tags(value)
            d = tags.get(b"d", b"").decode("ascii", "replace").lower()
            s = tags.get(b"s", b"").decode("ascii", "replace")
            props = f"header.d={d} header.s={s} header.b={tags.get(b'b', b'')[:8].decode()}"
            state, records = await self.txt(f"{s}._domainkey.{d}") if d and s else ("none", [])
            if state == "temperror":
                metrics.content_filter_checks.labels("dkim_verify", "temperror").inc()
                out.append(("dkim", "temperror", props))
                continue
            keys = {f"{s}._domainkey.{d}.": records[0] if records else b""}

            def lookup(name: bytes | str, timeout: float = 5, _k: dict[str, bytes] = keys
                       ) -> bytes:
                text = name.decode() if isinstance(name, bytes) else name
                return _k.get(text if text.endswith(".") else text + ".", b"")

            try:
                good = dkim.DKIM(message).verify(idx, dnsfunc=lookup)
                result = "pass" if good else "fail"
            except dkim.ValidationError as exc:  # a changed body fails; a bad tag is permerror
                result = "fail" if "body hash mismatch" in str(exc) else "permerror"
            except dkim.DKIMException:  # no key, a bad key, a malformed signature
                result = "permerror"
            metrics.content_filter_checks.labels("dkim_verify", result).inc()
            out.append(("dkim", result, props))
        return out

    def spf_result(self, ip: str, sender: str, helo: str) -> tuple[str, str]:
        """pyspf's result for the SMTP client, in a thread (its DNS is synchronous)."""
        try:
            result, _, _ = spf.query(ip, sender or f"postmaster@{helo}", helo,
                                     timeout=10).check()
        except Exception as exc:  # pyspf raises its own errors for DNS trouble
            log.info("SPF check for %s from %s: %s", sender, ip, exc)
            result = "temperror"
        return result, "smtp.mailfrom" if sender else "smtp.helo"

    async def dmarc(self, from_domain: str, dkim_pass: list[str], spf_pass: str
                    ) -> tuple[str, str, str]:
        if not from_domain:
            return "dmarc", "none", ""
        policy_state, records = await self.txt(f"_dmarc.{from_domain}")
        if policy_state == "none" and org_domain(from_domain) != from_domain:
            policy_state, records = await self.txt(f"_dmarc.{org_domain(from_domain)}")
        props = f"header.from={from_domain}"
        if policy_state == "temperror":
            return "dmarc", "temperror", props
        record = next((r for r in records if r.lower().startswith(b"v=dmarc1")), None)
        if record is None:
            return "dmarc", "none", props
        tags = sig_tags(record)
        policy = tags.get(b"p", b"none").decode("ascii", "replace").lower()
        ok = any(aligned(d, from_domain) for d in dkim_pass) or aligned(spf_pass, from_domain)
        return "dmarc", "pass" if ok else "fail", f"(p={policy}) {props}"

    async def verify(self, message: bytes, sender: str, client_addr: str, helo: str
                     ) -> tuple[bytes, list[int]]:
        """The Authentication-Results header to prepend, and the header indexes to drop."""
        start = time.monotonic()
        block = message.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        headers = dkim.rfc822_parse(block)[0]
        results = Results(await self.dkim_results(message, headers))
        spf_domain = ""
        if client_addr and client_addr != "unknown":
            spf_start = time.monotonic()
            result, scope = await asyncio.to_thread(self.spf_result, client_addr, sender, helo)
            metrics.content_filter_checks.labels("spf", result).inc()
            metrics.content_filter_check_seconds.labels("spf").observe(
                time.monotonic() - spf_start)
            ident = sender if scope == "smtp.mailfrom" else helo
            results.items.append(("spf", result, f"{scope}={ident}"))
            if result == "pass":
                spf_domain = (sender.rpartition("@")[2] if sender else helo).lower()
        from_values = [v for n, v in headers if n.lower() == b"from"]
        addrs = email.utils.getaddresses([v.decode("utf-8", "replace") for v in from_values[:1]])
        from_domain = addrs[0][1].rpartition("@")[2].lower() if addrs else ""
        passed = [p.split()[0].partition("=")[2] for m, r, p in results.items
                  if m == "dkim" and r == "pass"]
        dmarc = await self.dmarc(from_domain, passed, spf_domain)
        metrics.content_filter_checks.labels("dmarc", dmarc[1]).inc()
        results.items.append(dmarc)
        metrics.content_filter_check_seconds.labels("authres").observe(time.monotonic() - start)
        return results.header(self.authserv_id), strip_own_results(headers, self.authserv_id)
