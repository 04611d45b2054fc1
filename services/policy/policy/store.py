"""The Redis side of the checks: one script per request, one warning per outage.

Every replica of the policy service keeps its state in the one Redis of
``postbus_redis_url``, so that replicas behind one address answer alike.
A check calls :meth:`Store.script`; when Redis cannot answer (down, slow,
refusing) it raises :class:`RedisDown` and the server answers
``postbus_policy_default_action`` instead. The outage is logged once, when
it starts, and once when Redis answers again; meanwhile Redis is not asked
for :data:`RETRY_AFTER` seconds after each failure, so that requests do not
each wait for a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from postbus.maps import context
from postbus.redis_script import RedisOutage, run_script

__all__ = ["PREFIX", "RedisDown", "Store"]

log = logging.getLogger("postbus.policy")

PREFIX = "postbus:policy:"
TIMEOUT = 1.0  # seconds one script may take before the request gets the default action
RETRY_AFTER = 2.0  # seconds without asking Redis after it failed


class RedisDown(Exception):
    """Redis did not answer; the request gets the default action."""


class Store:
    def __init__(self, redis: Callable[[], Redis] = context.redis_client, *,
                 timeout: float = TIMEOUT, retry_after: float = RETRY_AFTER) -> None:
        self.redis = redis
        self.timeout = timeout
        self.outage = RedisOutage(
            log, "warning: problem talking to Redis: %s; answering "
                 "postbus_policy_default_action until it is back",
            back="Redis answers again; policy checks resumed", retry_after=retry_after)

    async def script(self, script: str, keys: list[str], args: list[str | int | float]) -> Any:
        if self.outage.skipping():
            raise RedisDown
        got = await self.outage.call(run_script(self.redis(), script, keys, args), self.timeout)
        if got is None:
            raise RedisDown
        return got
