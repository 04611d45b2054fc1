"""TLS results per policy domain and UTC day, in Redis (shared by every replica).

One hash per day, domain and policy (``postbus:tlsrpt:<day>:<domain>:<id>``)
holds the policy (``policy``: its RFC 8460 JSON), the successful sessions
(``success``) and a counter per failure (``failure`` TAB type TAB MX host TAB
address); the set ``postbus:tlsrpt:<day>`` names the hashes of that day.
Everything expires after a week: a report is about one day, sent the next.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

PREFIX = "postbus:tlsrpt:"
KEEP = 7 * 86400


def day_of(when: float | None = None) -> str:
    """The UTC day (``2026-11-30``) of a time."""
    return datetime.datetime.fromtimestamp(time.time() if when is None else when,
                                           datetime.UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class PolicyInfo:
    """The policy a result was had under (RFC 8460 §4.4 "policy")."""

    domain: str
    kind: str = "sts"  # sts, or no-policy-found (a policy fetch that failed)
    id: str = ""
    text: str = ""
    mx: tuple[str, ...] = ()

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy-type": self.kind, "policy-domain": self.domain}
        if self.text:
            out["policy-string"] = [line for line in self.text.splitlines() if line.strip()]
        if self.mx:
            out["mx-host"] = list(self.mx)
        return out


@dataclass
class DayEntry:
    """What one day holds for one policy: the report's "policies" item."""

    domain: str
    policy: dict[str, Any]
    success: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        failed = sum(int(f["failed-session-count"]) for f in self.failures)
        out: dict[str, Any] = {
            "policy": self.policy,
            "summary": {"total-successful-session-count": self.success,
                        "total-failure-session-count": failed},
        }
        if self.failures:
            out["failure-details"] = self.failures
        return out


async def record(redis: Redis, info: PolicyInfo, result: str, mx_host: str = "",
                 addr: str = "", when: float | None = None) -> None:
    """Count one session (``result`` "" : a success) or one policy failure."""
    day = day_of(when)
    key = f"{PREFIX}{day}:{info.domain}:{info.id}"
    field_name = "success" if not result else f"failure\t{result}\t{mx_host}\t{addr}"
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hsetnx(key, "policy", json.dumps(info.json()))
        pipe.hincrby(key, field_name, 1)
        pipe.expire(key, KEEP)
        pipe.sadd(f"{PREFIX}{day}", key)
        pipe.expire(f"{PREFIX}{day}", KEEP)
        await pipe.execute()


async def day_entries(redis: Redis, day: str) -> list[DayEntry]:
    """Every policy's results of ``day``, by domain."""
    entries = []
    for raw in sorted(await redis.smembers(f"{PREFIX}{day}")):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        fields = {(k.decode() if isinstance(k, bytes) else k): v
                  for k, v in (await redis.hgetall(key)).items()}
        if "policy" not in fields:
            continue
        policy = json.loads(fields.pop("policy"))
        entry = DayEntry(str(policy["policy-domain"]), policy)
        for name, count in sorted(fields.items()):
            if name == "success":
                entry.success = int(count)
                continue
            _, kind, mx_host, addr = name.split("\t")
            detail: dict[str, Any] = {"result-type": kind}
            if addr:
                detail["receiving-ip"] = addr
            if mx_host:
                detail["receiving-mx-hostname"] = mx_host
            detail["failed-session-count"] = int(count)
            entry.failures.append(detail)
        entries.append(entry)
    return entries
