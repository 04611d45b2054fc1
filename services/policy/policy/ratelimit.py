"""Rate limits over sliding windows, shared by every replica through Redis.

``postbus_policy_ratelimit_limits`` holds ``ATTRIBUTE COUNT/TIME`` pairs,
say ``client_address 100/1h, sender 500/1d, sasl_username 1000/1d,
recipient_domain 50/1m``. Each RCPT request counts one recipient against
every limit whose attribute it has (an empty sender or SASL user counts
against none); other protocol states pass. A request that would exceed a
limit gets ``postbus_policy_ratelimit_action`` with its text and is not
counted, so a client held back does not push its own window further.

A window is a Redis sorted set of the request times in it (at most COUNT
members, so bounded); one script checks and counts every limit of a
request atomically, in one round trip. Unlike anvil's fixed periods
(Postfix's anvil_rate_time_unit), a window slides: at any moment, the last
TIME holds at most COUNT recipients.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from postbus.config.conv import ConfigError, parse_time
from postbus.config.loader import Config

from .store import PREFIX, Store

__all__ = ["Limit", "RateLimit", "parse_limits"]

log = logging.getLogger("postbus.policy")

ATTRIBUTES = ("client_address", "sender", "sasl_username", "recipient_domain")

# KEYS: one window per limit; ARGV: now (ms), member, then (window ms, count) per key.
# -> 0 when counted, else the number (from 1) of the first limit exceeded.
_SCRIPT = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local window, limit = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"""


@dataclass(frozen=True)
class Limit:
    attribute: str
    count: int
    window: float  # seconds
    spec: str  # as written: 100/1h


def parse_limits(words: list[str]) -> list[Limit]:
    """``["sender", "100/1h", ...]`` (main.cf list words) as limits."""
    param = "postbus_policy_ratelimit_limits"
    if len(words) % 2:
        raise ConfigError(f"{param}: expected ATTRIBUTE COUNT/TIME pairs, got {' '.join(words)!r}")
    limits = []
    for attribute, spec in zip(words[::2], words[1::2], strict=True):
        if attribute not in ATTRIBUTES:
            raise ConfigError(f"{param}: unknown attribute {attribute!r} (expected one of "
                              f"{', '.join(ATTRIBUTES)})")
        count, slash, window = spec.partition("/")
        if not slash or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"{param}: bad limit {spec!r} for {attribute}: expected COUNT/TIME")
        seconds = parse_time(window)
        if seconds <= 0:
            raise ConfigError(f"{param}: bad window {window!r} for {attribute}")
        limits.append(Limit(attribute, int(count), seconds, spec))
    return limits


class RateLimit:
    name = "ratelimit"

    def __init__(self, cfg: Config, store: Store, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.limits = parse_limits(cfg.list("postbus_policy_ratelimit_limits"))
        self.action = cfg.get("postbus_policy_ratelimit_action")
        self.text = cfg.get("postbus_policy_ratelimit_text")
        self._ids = itertools.count(1)
        self._token = os.urandom(4).hex()

    async def check(self, req: dict[str, str]) -> str:
        if req.get("protocol_state", "RCPT").upper() != "RCPT" or not self.limits:
            return "DUNNO"
        keys, args, used = [], [], []
        for limit in self.limits:
            value = _value(req, limit.attribute)
            if not value:
                continue
            keys.append(f"{PREFIX}rate:{limit.attribute}:{limit.spec}:{value}")
            args += [int(limit.window * 1000), limit.count]
            used.append((limit, value))
        if not keys:
            return "DUNNO"
        now = int(self.clock() * 1000)
        member = f"{now}:{self._token}:{next(self._ids)}"
        over = await self.store.script(_SCRIPT, keys, [now, member, *args])
        if not over:
            return "DUNNO"
        limit, value = used[int(over) - 1]
        log.info("ratelimit: %s %s exceeds %s: client=%s, sender=<%s>, recipient=<%s>",
                 limit.attribute, value, limit.spec, req.get("client_address", ""),
                 req.get("sender", ""), req.get("recipient", ""))
        window = limit.spec.partition("/")[2]
        text = (self.text.replace("%k", limit.attribute).replace("%v", value)
                .replace("%l", str(limit.count)).replace("%w", window))
        return f"{self.action} {text}"


def _value(req: dict[str, str], attribute: str) -> str:
    if attribute == "recipient_domain":
        recipient = req.get("recipient", "")
        return recipient.rpartition("@")[2].lower() if "@" in recipient else ""
    value = req.get(attribute, "")
    return value.lower() if attribute != "client_address" else value
