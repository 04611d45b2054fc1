"""The checks of ``postbus_policy_checks``, in order, as one answer per request.

A policy reply carries one action, so the checks compose as a restriction
list does: the first check whose action decides (anything but ``DUNNO`` and
``PREPEND``) gives the answer and the later checks do not run (a greylisted
request does not count against a rate limit, say); a ``PREPEND`` is kept
unless a later check decides, and the first one wins when several would
prepend. Put the cheap and decisive checks first.

A check that needs Redis while Redis cannot answer gives
``postbus_policy_default_action`` for the request (the outage is logged
once by :class:`~policy.store.Store`). Every action is counted in
``postbus_policy_actions{check, action}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter

from postbus import metrics
from postbus.config.conv import ConfigError
from postbus.config.loader import Config

from .greylist import Greylist
from .ratelimit import RateLimit
from .spf import Spf
from .store import RedisDown, Store

__all__ = ["Check", "Checks"]

NAMES = ("greylist", "ratelimit", "spf")


class Check(Protocol):
    name: str

    async def check(self, req: dict[str, str]) -> str: ...


def _verb(action: str) -> str:
    """The metric label of an action: its first word, or the class of a numeric reply."""
    word = action.split(None, 1)[0].upper() if action.strip() else "DUNNO"
    return f"{word[0]}xx" if word[:1].isdigit() else word


class Checks:
    def __init__(self, cfg: Config, store: Store | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store or Store()
        self.default_action = cfg.get("postbus_policy_default_action").strip() or "DUNNO"
        self.checks: list[Check] = []
        for name in cfg.list("postbus_policy_checks"):
            if name == "greylist":
                self.checks.append(Greylist(cfg, self.store, clock=clock))
            elif name == "ratelimit":
                self.checks.append(RateLimit(cfg, self.store, clock=clock))
            elif name == "spf":
                self.checks.append(Spf(cfg))
            else:
                raise ConfigError(f"unknown check {name!r} (expected {', '.join(NAMES)})",
                                  parameter="postbus_policy_checks")
        # label children made once: a request costs no label lookup
        self._counters: dict[tuple[str, str], Counter] = {}

    def _count(self, check: str, action: str) -> None:
        key = (check, _verb(action))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.policy_actions.labels(*key)
        counter.inc()

    async def answer(self, req: dict[str, str]) -> str:
        prepend = ""
        for check in self.checks:
            try:
                action = await check.check(req)
            except RedisDown:
                action = self.default_action
                self._count(check.name, "REDIS_DOWN")
            else:
                self._count(check.name, action)
            verb = action.split(None, 1)[0].upper() if action else "DUNNO"
            if verb == "PREPEND":
                prepend = prepend or action
            elif verb != "DUNNO":
                return action
        return prepend or "DUNNO"
