"""Lua scripts run on Redis by their SHA1 digest (one round trip per call).

The destination windows and the client limits keep their state in Redis and
change it with small scripts: atomic, one round trip. EVALSHA sends only the
digest; a Redis that does not know the script (first use, restarted,
SCRIPT FLUSH) answers NOSCRIPT and the script is loaded once.
:class:`RedisOutage` is what these clients share when Redis is down: skip
it for a while, say so once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

T = TypeVar("T")

_digests: dict[str, str] = {}  # script -> SHA1, as Redis knows it


async def run_script(client: Redis, script: str, keys: list[str],
                     args: list[str | int | float]) -> Any:
    """The script's answer for these keys and arguments."""
    digest = _digests.get(script)
    if digest is not None:
        try:
            return await client.evalsha(digest, len(keys), *keys, *args)
        except NoScriptError:
            pass
    _digests[script] = await client.script_load(script)
    return await client.evalsha(_digests[script], len(keys), *keys, *args)


Call = tuple[str, list[str], list[str | int | float]]  # script, keys, arguments


async def run_scripts(client: Redis, calls: list[Call]) -> list[Any]:
    """Each call's answer (or its RedisError), in one pipelined round trip.

    A script Redis does not know is loaded and only the calls that got
    NOSCRIPT run again, so that no call runs twice.
    """
    for script in {script for script, _, _ in calls} - _digests.keys():
        _digests[script] = await client.script_load(script)
    answers: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for i in todo:
            script, keys, args = calls[i]
            pipe.evalsha(_digests[script], len(keys), *keys, *args)
        got = await pipe.execute(raise_on_error=False)
        again = []
        for i, answer in zip(todo, got, strict=True):
            answers[i] = answer
            if isinstance(answer, NoScriptError) and attempt == 0:
                again.append(i)
        if not again:
            break
        for script in {calls[i][0] for i in again}:
            _digests[script] = await client.script_load(script)
        todo = again
    return answers


class RedisOutage:
    """What a Redis client does while Redis cannot answer: each failure skips Redis for
    ``retry_after`` seconds (a dead Redis then costs callers no time), and one outage is
    one warning, however many calls fail, plus one line when Redis answers again.

    ``warning`` is the log text, with ``%s`` for the error; ``back`` the line logged at
    recovery (empty: none).
    """

    def __init__(self, logger: logging.Logger, warning: str, back: str = "",
                 retry_after: float = 5.0) -> None:
        self.log = logger
        self.warning = warning
        self.back = back
        self.retry_after = retry_after
        self.down = False  # a failure was logged and Redis has not answered since
        self._skip_until = 0.0

    def skipping(self) -> bool:
        """True while calls should not even try Redis."""
        return time.monotonic() < self._skip_until

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self.log.warning(self.warning, str(exc) or exc.__class__.__name__)
            self.down = True
        self._skip_until = time.monotonic() + self.retry_after

    def answered(self) -> None:
        if self.down:
            self.down = False
            if self.back:
                self.log.info("%s", self.back)

    async def call(self, job: Awaitable[T], timeout: float) -> T | None:
        """``job``'s result, or None when Redis is skipped, fails or is slower than ``timeout``."""
        if self.skipping():
            if inspect.iscoroutine(job):
                job.close()
            return None
        try:
            async with asyncio.timeout(timeout):  # no task per call, unlike wait_for
                result = await job
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(exc)
            return None
        self.answered()
        return result
