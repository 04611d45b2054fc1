"""The Redis side of the checks: scripts of concurrent requests in one round trip, one
warning per outage.

Every replica of the policy service keeps its state in the one Redis of
``postbus_redis_url``, so that replicas behind one address answer alike.
A check calls :meth:`Store.script`; the scripts of all the requests that
wait at the same moment go to Redis as one pipeline (one write, one read:
the cost of a round trip is shared by every connection), one pipeline at a
time. When Redis cannot answer (down, slow, refusing) the call raises
:class:`RedisDown` and the server answers ``postbus_policy_default_action``
instead. The outage is logged once, when it starts, and once when Redis
answers again; meanwhile Redis is not asked for :data:`RETRY_AFTER`
seconds after each failure, so that requests do not each wait for a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from postbus.maps import context
from postbus.redis_script import Call, RedisOutage, run_scripts

__all__ = ["PREFIX", "RedisDown", "Store"]

log = logging.getLogger("postbus.policy")

PREFIX = "postbus:policy:"
TIMEOUT = 1.0  # seconds one pipeline may take before its requests get the default action
RETRY_AFTER = 2.0  # seconds without asking Redis after it failed
BATCH = 256  # scripts per pipeline at most


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
        self._waiting: list[tuple[Call, asyncio.Future[Any]]] = []
        self._pump: asyncio.Task[None] | None = None

    async def script(self, script: str, keys: list[str], args: list[str | int | float]) -> Any:
        if self.outage.skipping():
            raise RedisDown
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(((script, keys, args), future))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            try:
                answers = await self.outage.call(
                    run_scripts(self.redis(), [call for call, _ in batch]), self.timeout)
            except Exception as exc:  # not Redis's failure: no caller may wait forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for n, (_, future) in enumerate(batch):
                if future.done():
                    continue
                answer = None if answers is None else answers[n]
                if answer is None or isinstance(answer, RedisError):
                    if isinstance(answer, RedisError):
                        self.outage.failed(answer)
                    future.set_exception(RedisDown())
                else:
                    future.set_result(answer)
