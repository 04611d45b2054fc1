"""Lua scripts run on Redis by their SHA1 digest (one round trip per call).

The destination windows and the client limits keep their state in Redis and
change it with small scripts: atomic, one round trip. EVALSHA sends only the
digest; a Redis that does not know the script (first use, restarted,
SCRIPT FLUSH) answers NOSCRIPT and the script is loaded once.

Scripts run twice per delivery (take a slot, free it). Through redis-py's
client a call cost the delivery agent about 0.1 ms of CPU (a pool, a retry
wrapper and a timeout per command): a fifth of its work per message. So
scripts go over one pipelined connection of their own per client
(:class:`ScriptConnection`: commands written as they come, replies matched
in order, parsed by hiredis), with redis-py's exceptions, so callers handle
Redis away as before. TLS (``rediss://``) stays with redis-py.

:class:`RedisOutage` is what these clients share when Redis is down: skip
it for a while, say so once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import BusyLoadingError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

_digests: dict[str, str] = {}  # script -> SHA1, as Redis knows it
_connections: weakref.WeakKeyDictionary[Redis, ScriptConnection] = weakref.WeakKeyDictionary()


async def run_script(client: Redis, script: str, keys: list[str],
                     args: list[str | int | float]) -> Any:
    """The script's answer for these keys and arguments."""
    conn = _connection(client)
    if conn is None:  # TLS, or something else redis-py knows better
        return await _run_with_client(client, script, keys, args)
    digest = _digests.get(script)
    if digest is not None:
        try:
            return await conn.call("EVALSHA", digest, len(keys), *keys, *args)
        except NoScriptError:
            pass
    _digests[script] = _text(await conn.call("SCRIPT", "LOAD", script))
    return await conn.call("EVALSHA", _digests[script], len(keys), *keys, *args)


async def _run_with_client(client: Redis, script: str, keys: list[str],
                           args: list[str | int | float]) -> Any:
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


def forget(client: Redis) -> None:
    """Close the script connection of a client that is being closed."""
    conn = _connections.pop(client, None)
    if conn is not None:
        conn.close()


def _connection(client: Redis) -> ScriptConnection | None:
    conn = _connections.get(client)
    if conn is None:
        pool = client.connection_pool
        if pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        conn = _connections[client] = ScriptConnection(dict(pool.connection_kwargs))
    return conn


class ScriptConnection:
    """One pipelined connection to Redis: many callers, replies in order.

    Connected on first use and again after Redis closed it; a command waits at
    most ``socket_timeout`` (then the connection is dropped and every caller
    waiting on it gets redis-py's TimeoutError)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.timeout = float(kwargs.get("socket_timeout") or 5.0)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = (
            collections.deque())
        self._connecting: asyncio.Lock | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._batch: tuple[asyncio.StreamWriter, list[bytes]] | None = None

    async def call(self, *args: str | int | float) -> Any:
        writer = self._writer
        if writer is None or writer.is_closing():
            writer = await self._connect()
        return await self._send(writer, args)

    def _send(self, writer: asyncio.StreamWriter,
              args: tuple[str | int | float, ...]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, loop.time()))
        batch = self._batch
        if batch is None or batch[0] is not writer:
            batch = self._batch = (writer, [])
            loop.call_soon(self._flush, batch)
        batch[1].append(_pack(args))
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._check_overdue)
        return future

    def _flush(self, batch: tuple[asyncio.StreamWriter, list[bytes]]) -> None:
        """One write for every command sent in the same turn of the event loop:
        callers woken together by one read of replies mostly call again together,
        and a system call per command was most of the client's cost."""
        if self._batch is batch:
            self._batch = None
        writer, commands = batch
        if not writer.is_closing():
            writer.write(b"".join(commands))

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            kw = self.kwargs
            connect_timeout = float(kw.get("socket_connect_timeout") or self.timeout)
            try:
                if "path" in kw:
                    opened = asyncio.open_unix_connection(kw["path"])
                else:
                    opened = asyncio.open_connection(kw.get("host", "localhost"),
                                                     int(kw.get("port", 6379)))
                reader, writer = await asyncio.wait_for(opened, connect_timeout)
            except (TimeoutError, OSError) as exc:
                raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
            self._reader_task = asyncio.create_task(self._read(reader, writer))
            hello: list[tuple[str | int | float, ...]] = []
            if kw.get("password"):
                user = kw.get("username")
                hello.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
            if int(kw.get("db") or 0):
                hello.append(("SELECT", int(kw["db"])))
            # written before any caller's command can be (no await in between)
            answers = [self._send(writer, command) for command in hello]
            self._writer = writer
            for answer in await asyncio.gather(*answers, return_exceptions=True):
                if isinstance(answer, Exception):
                    error = RedisConnectionError(f"Redis refused the connection: {answer}")
                    self._drop(writer, error)
                    raise error from answer
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader(notEnoughData=_MORE)
        error: Exception = RedisConnectionError("Connection closed by Redis")
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                parser.feed(data)
                while (reply := parser.gets()) is not _MORE:
                    future, _ = self._waiting.popleft()
                    if not future.done():
                        if isinstance(reply, hiredis.ReplyError):
                            future.set_exception(_error(str(reply)))
                        else:
                            future.set_result(reply)
        except (OSError, IndexError, hiredis.ProtocolError) as exc:
            error = RedisConnectionError(f"Redis connection failed: {exc}")
        finally:
            self._drop(writer, error)

    def _check_overdue(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        age = loop.time() - self._waiting[0][1]
        if age >= self.timeout and self._writer is not None:
            self._drop(self._writer, RedisTimeoutError("Timeout reading from Redis"))
        else:
            self._timer = loop.call_later(self.timeout - age, self._check_overdue)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None:
            self._drop(self._writer, RedisConnectionError("Connection closed"))

    def _drop(self, writer: asyncio.StreamWriter, error: Exception) -> None:
        """Close the connection; every caller still waiting gets ``error``."""
        if self._writer is writer:
            self._writer = None
        with contextlib.suppress(RuntimeError):  # its loop is closed: nothing to stop
            writer.transport.abort()
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)


_MORE = object()  # hiredis: not enough data for a whole reply yet


def _error(text: str) -> RedisError:
    """The error redis-py raises for that reply: a Redis still loading its data after
    a restart is not there yet (BusyLoadingError, a ConnectionError: try again)."""
    if text.startswith("LOADING"):
        return BusyLoadingError(text)
    return NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)


def _pack(args: tuple[str | int | float, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else repr(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
