"""From a next-hop name to addresses to try (≈ smtp_addr.c).

Two lookup styles, as Postfix's ``smtp_host_lookup``:

* DNS (the default): MX records for a domain, sorted by preference and
  shuffled within one preference, then A/AAAA for each MX host; a domain
  without MX records is used as a host itself. dnspython's async resolver
  asks ``postbus_dns_servers`` when set (``host`` or ``host:port``), else
  the system's resolv.conf.
* native (``disable_dns_lookups = yes`` or ``smtp_dns_support_level =
  disabled``): the system resolver (getaddrinfo), never MX.

Failures carry Postfix's texts and codes: NXDOMAIN is a hard error
(5.4.4), a server failure or timeout a soft one (4.4.3).

With ``smtp_dns_support_level = dnssec`` every query sets the DO bit and
an answer is "secure" only when the resolver set the AD bit: as Postfix,
Postbus trusts its (local, validating) resolver and validates nothing
itself. Targets carry that (``secure``, ``mx_secure``) for DANE.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from dataclasses import dataclass, field, replace

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.nameserver
import dns.rdatatype
import dns.resolver

from postbus.delivery import Outcome
from postbus.dns_config import async_resolver


@dataclass(frozen=True)
class Target:
    """One address to connect to; ``host`` is the name it was found under."""

    host: str
    addr: str
    port: int
    secure: bool = field(default=False, compare=False)  # A/AAAA answer with the AD bit
    mx_secure: bool | None = field(default=None, compare=False)  # None: not found by MX

    @property
    def namaddr(self) -> str:
        return f"{self.host}[{self.addr}]"

    @property
    def namaddrport(self) -> str:
        """``host[addr]:port``; a UNIX-domain socket (port 0) has no port."""
        return f"{self.host}[{self.addr}]:{self.port}" if self.port else self.namaddr


class HostLookupError(Exception):
    """A name that gave no address; ``outcome`` says bounce or defer, and why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def numeric(host: str) -> str | None:
    """The address itself when ``host`` is an address literal (``ipv6:`` prefix allowed)."""
    text = host[5:] if host.lower().startswith("ipv6:") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _dns_error(name: str, rtype: str, exc: Exception) -> HostLookupError:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        text, dsn = "Host not found", "5.4.4"
    elif isinstance(exc, dns.resolver.NoAnswer):
        text, dsn = "Host found but no data record of requested type", "5.4.4"
    else:  # SERVFAIL, timeouts, no server answering
        text, dsn = "Host not found, try again", "4.4.3"
    reason = (
        "Host or domain name not found. "
        f"Name service error for name={name} type={rtype}: {text}"
    )
    return HostLookupError(Outcome.by_dsn(dsn, reason))



class HostResolver:
    """Turns next-hop names into :class:`Target` lists with one configuration."""

    def __init__(
        self,
        *,
        use_dns: bool,
        dns_servers: list[str],
        families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6),
        timeout: float = 10.0,
        dnssec: bool = False,
    ) -> None:
        self.use_dns = use_dns
        self.families = families
        self.dnssec = dnssec and use_dns
        self.resolver = async_resolver(dns_servers)
        self.resolver.lifetime = timeout
        if self.dnssec:  # ≈ RES_USE_DNSSEC: ask for the AD bit's verdict
            self.resolver.use_edns(0, dns.flags.DO, 1232)

    def secure(self, answer: dns.resolver.Answer) -> bool:
        """Did the (trusted) resolver validate ``answer`` (the AD bit, with dnssec only)?"""
        return self.dnssec and bool(answer.response.flags & dns.flags.AD)

    async def mx_targets(self, domain: str, port: int) -> list[Target]:
        """Targets for a domain: its MX hosts in order, or the domain as a host."""
        if not self.use_dns:
            return await self.host_targets(domain, port)
        try:
            answer = await self.resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NoAnswer:
            return await self.host_targets(domain, port)
        except Exception as exc:  # dnspython raises several unrelated types
            raise _dns_error(domain, "MX", exc) from exc
        records = sorted(answer, key=lambda r: (r.preference, random.random()))
        if len(records) == 1 and str(records[0].exchange) == ".":
            raise HostLookupError(
                Outcome.by_dsn("5.1.10", f"Domain {domain} does not accept mail (nullMX)")
            )
        targets: list[Target] = []
        last: HostLookupError | None = None
        mx_secure = self.secure(answer)
        for record in records:
            host = str(record.exchange).rstrip(".")
            try:
                targets += [replace(t, mx_secure=mx_secure)
                            for t in await self.host_targets(host, port)]
            except HostLookupError as exc:
                last = exc
        if not targets:
            raise last or _dns_error(domain, "MX", dns.resolver.NoAnswer())
        return targets

    async def host_targets(self, host: str, port: int) -> list[Target]:
        """Targets for one host name (A/AAAA, or getaddrinfo without DNS)."""
        addr = numeric(host)
        if addr is not None:
            return [Target(addr, addr, port)]
        if not self.use_dns:
            return await self._native(host, port)
        targets: list[Target] = []
        errors: list[HostLookupError] = []
        for family, rtype in ((socket.AF_INET, "A"), (socket.AF_INET6, "AAAA")):
            if family not in self.families:
                continue
            try:
                answer = await self.resolver.resolve(host, rtype, search=False)
            except Exception as exc:
                errors.append(_dns_error(host, rtype, exc))
                continue
            secure = self.secure(answer)
            targets += [Target(host, r.address, port, secure) for r in answer]
        if not targets:
            # NXDOMAIN or a temporary failure says more than "no AAAA record"
            raise next((e for e in errors if "no data record" not in str(e)), errors[0])
        return targets

    async def _native(self, host: str, port: int) -> list[Target]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            dsn = "4.4.4" if exc.errno == socket.EAI_AGAIN else "5.4.4"
            reason = f"unable to look up host {host}: {exc.strerror}"
            raise HostLookupError(Outcome.by_dsn(dsn, reason)) from exc
        seen: dict[str, Target] = {}
        for family, *_rest, sockaddr in infos:
            if family in self.families:
                seen.setdefault(str(sockaddr[0]), Target(host, str(sockaddr[0]), port))
        if not seen:
            reason = f"unable to look up host {host}: No address associated with hostname"
            raise HostLookupError(Outcome.by_dsn("5.4.4", reason))
        return list(seen.values())



def families(inet_protocols: list[str]) -> tuple[int, ...]:
    """``inet_protocols`` as address families (``all`` = IPv4 and IPv6)."""
    words = {w.lower() for w in inet_protocols}
    out: list[int] = []
    if words & {"all", "ipv4"}:
        out.append(socket.AF_INET)
    if words & {"all", "ipv6"}:
        out.append(socket.AF_INET6)
    return tuple(out) or (socket.AF_INET,)
