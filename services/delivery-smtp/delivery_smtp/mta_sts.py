"""MTA-STS (RFC 8461): a recipient domain's policy as a TLS policy source beside
smtp_tls_policy_maps (an entry there wins, as with postfix-mta-sts-resolver).

A domain with a ``_mta-sts`` TXT record ``v=STSv1; id=...`` has its policy
fetched (:mod:`delivery_smtp.mta_sts_fetch`) and cached in Redis for every
replica, for its ``max_age``. The TXT id is checked again once the cached
copy is older than postbus_mta_sts_cache_refresh; a new id fetches the
policy again, and a fetch that fails keeps the cached policy (§5.1). Then:

* ``enforce``: only the MX hosts the policy's ``mx:`` patterns name, TLS
  with a certificate trusted (WebPKI) and naming the MX host (level verify,
  ``match=hostname``); anything less defers (4.7.5), never clear text;
* ``testing``: delivery as at level may (or the configured level when
  higher), the failures recorded for TLS-RPT only;
* ``none``: no policy (it replaces the cached one).

With postbus_tlsrpt, each session's result and each policy fetch failure is
counted for the domain's daily report (:mod:`postbus.tlsrpt.store`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field, replace

import dns.exception
import dns.resolver

from delivery_smtp.addr import HostResolver, Target
from delivery_smtp.mta_sts_fetch import FetchError, fetch_policy, https_context
from delivery_smtp.tls_policy import TlsPolicies, TlsPolicy
from postbus.config.loader import Config
from postbus.delivery import Outcome
from postbus.maps.context import redis_client
from postbus.tlsrpt import store

log = logging.getLogger("postbus.delivery")

KEY = "postbus:mta-sts:"
MAX_AGE = 31557600
_ID = re.compile(r"[A-Za-z0-9]{1,32}")


class PolicyInvalid(ValueError):
    pass


@dataclass(frozen=True)
class StsPolicy:
    """One domain's fetched policy, as cached."""

    domain: str
    id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    text: str
    fetched: float
    checked: float

    def allows(self, host: str) -> bool:
        """Does an ``mx:`` pattern name ``host`` (``*.`` covers one leftmost label)?"""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            pattern = pattern.lower().rstrip(".")
            if host == pattern:
                return True
            if pattern.startswith("*.") and host.partition(".")[2] == pattern[2:] \
                    and host.partition(".")[0]:
                return True
        return False

    @property
    def info(self) -> store.PolicyInfo:
        return store.PolicyInfo(self.domain, "sts", self.id, self.text, self.mx)


def parse_policy(text: str) -> tuple[str, tuple[str, ...], int]:
    """mode, mx patterns and max_age of a policy file; PolicyInvalid when it is not one."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in re.split(r"\r?\n", text):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyInvalid(f"malformed line: {line[:60]!r}")
        key, value = key.strip().lower(), value.strip()
        if key == "mx":
            mx.append(value)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyInvalid("version is not STSv1")
    mode = fields.get("mode", "")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyInvalid(f"invalid mode: {mode!r}")
    age = fields.get("max_age", "")
    if not age.isdigit() or len(age) > 10:
        raise PolicyInvalid(f"invalid max_age: {age!r}")
    if not mx and mode != "none":
        raise PolicyInvalid("no mx")
    return mode, tuple(mx), min(int(age), MAX_AGE)


def parse_txt(records: list[str]) -> str | None:
    """The id of the one ``v=STSv1`` record, or None (none, several, or malformed)."""
    found = [r for r in records if re.match(r"v=STSv1\s*(;|$)", r)]
    if len(found) != 1:
        return None
    fields = dict(f.strip().partition("=")[::2] for f in found[0].split(";") if f.strip())
    ident = fields.get("id", "").strip()
    return ident if _ID.fullmatch(ident) else None


@dataclass
class StsHop:
    """MTA-STS for one next hop of one delivery: which MX hosts, and the results."""

    policy: StsPolicy
    record: bool
    verdict: list[str] = field(default_factory=list)

    def allowed(self, targets: list[Target]) -> list[Target] | Outcome:
        """The targets the policy allows (enforce), or every one (testing)."""
        if self.policy.mode != "enforce":
            return targets
        ok = [t for t in targets if self.policy.allows(t.host)]
        if ok:
            return ok
        hosts = ", ".join(dict.fromkeys(t.host for t in targets))
        return Outcome("deferred", "4.7.5",
                       f"MTA-STS policy of {self.policy.domain} (id={self.policy.id}, mode "
                       f"enforce) allows none of its MX hosts: {hosts}")

    async def done(self, target: Target) -> None:
        """Count the session's result after a handshake (successful or not)."""
        results, self.verdict[:] = list(self.verdict), []
        if not self.policy.allows(target.host):
            results = ["validation-failure"]  # an MX host outside the policy (testing)
        if self.record and results:
            await _record(self.policy.info, results[-1], target.host, target.addr)


async def _record(info: store.PolicyInfo, result: str, host: str = "", addr: str = "") -> None:
    try:
        await store.record(redis_client(), info, result, host, addr)
    except Exception as exc:  # a report is never worth a delivery
        log.warning("TLS-RPT: cannot record a result for %s: %s", info.domain, exc)


class MtaSts:
    """Policies of recipient domains, cached in Redis; one per agent configuration."""

    def __init__(self, cfg: Config, resolver: HostResolver) -> None:
        self.resolver = resolver
        self.refresh = cfg.time("postbus_mta_sts_cache_refresh")
        self.timeout = cfg.time("postbus_mta_sts_timeout")
        self.port = cfg.int("postbus_mta_sts_https_port")
        self.context = https_context(cfg.get("postbus_mta_sts_ca_file").strip())
        self.record = cfg.bool("postbus_tlsrpt")
        self._inflight: dict[str, asyncio.Future[StsPolicy | None]] = {}

    async def hop(self, domain: str, policy: TlsPolicy,
                  policies: TlsPolicies) -> tuple[StsHop | None, TlsPolicy | Outcome]:
        """The MTA-STS state of next hop ``domain`` and the TLS policy it leads to."""
        sts = await self.policy(domain.lower().rstrip("."))
        if sts is None or sts.mode == "none":
            return None, policy
        if sts.mode == "enforce":
            made = policies.make("verify", {"match": "hostname"}, domain)
        elif policy.level == "none":
            made = policies.make("may", {}, domain)
        else:
            made = policy
        if isinstance(made, Outcome):
            return None, made
        return StsHop(sts, self.record), replace(made, sts=sts.mode)

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy in force for ``domain`` (None: no MTA-STS); deliveries to one domain
        that ask at the same time share one lookup (and one fetch)."""
        task = self._inflight.get(domain)
        if task is None:
            task = self._inflight[domain] = asyncio.ensure_future(self._policy(domain))
            task.add_done_callback(lambda _: self._inflight.pop(domain, None))
        return await asyncio.shield(task)

    async def _policy(self, domain: str) -> StsPolicy | None:
        now = time.time()
        cached = await self._cached(domain, now)
        if cached is not None and now - cached.checked < self.refresh:
            return cached
        try:
            ident = await self._txt(domain)
        except dns.exception.DNSException:
            return cached  # the DNS cannot say: keep what we know
        if ident is None:
            return cached  # no record (any more): the cached policy until it expires
        if cached is not None and cached.id == ident:
            await self._store(replace(cached, checked=now))
            return cached
        try:
            text = await fetch_policy(self.resolver, domain, self.port, self.context,
                                      self.timeout)
            try:
                mode, mx, max_age = parse_policy(text)
            except PolicyInvalid as exc:
                raise FetchError("sts-policy-invalid", f"policy of {domain}: {exc}") from exc
        except FetchError as exc:
            keep = f"; using the cached policy id={cached.id}" if cached else ""
            log.warning("MTA-STS policy fetch for %s (id=%s) failed: %s%s", domain, ident,
                        exc, keep)
            if cached is None and self.record:
                await _record(store.PolicyInfo(domain, "no-policy-found", ident), exc.kind)
            return cached
        fresh = StsPolicy(domain, ident, mode, mx, max_age, text, now, now)
        log.info("MTA-STS policy for %s: id=%s mode=%s max_age=%d mx=%s", domain, ident, mode,
                 max_age, ",".join(mx) or "-")
        await self._store(fresh)
        return fresh

    async def _txt(self, domain: str) -> str | None:
        if not self.resolver.use_dns:
            return None
        try:
            answer = await self.resolver.resolver.resolve(f"_mta-sts.{domain}", "TXT",
                                                          search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return parse_txt([b"".join(r.strings).decode("utf-8", "replace") for r in answer])

    async def _cached(self, domain: str, now: float) -> StsPolicy | None:
        try:
            raw = await redis_client().get(KEY + domain)
        except Exception as exc:
            log.warning("MTA-STS: cannot read the policy cache: %s", exc)
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            data["mx"] = tuple(data["mx"])
            policy = StsPolicy(**data)
        except (ValueError, TypeError, KeyError):
            return None
        return policy if now < policy.fetched + policy.max_age else None

    async def _store(self, policy: StsPolicy) -> None:
        ttl = max(1, int(policy.fetched + policy.max_age - time.time()))
        try:
            await redis_client().set(KEY + policy.domain, json.dumps(asdict(policy)), ex=ttl)
        except Exception as exc:
            log.warning("MTA-STS: cannot write the policy cache: %s", exc)
