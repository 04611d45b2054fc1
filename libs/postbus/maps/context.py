"""The process-wide maps context: Redis URL, lookup cache, change events.

``open_table(spec)`` receives no Config, yet the indexed types (``hash:``,
``btree:``, ...) and ``redis:`` need a Redis connection and a cache.  Each
service calls :func:`configure` once at start (tests do too)::

    context.configure(cfg.get("postbus_redis_url"), nats_client=nc)
    await context.watch_changes(nc)     # drop cached answers of changed tables

Without a call to :func:`configure` the context uses ``$POSTBUS_REDIS_URL``
or the registry default of ``postbus_redis_url``.

The Redis client is created lazily, one per event loop (a redis.asyncio
connection belongs to the loop that opened it); :func:`aclose` closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo

from postbus import redis_script
from postbus.bus.subjects import MAPS_CHANGED_SUBJECT
from postbus.maps.cache import LookupCache
from postbus.params import PARAMS

__all__ = [
    "MapsContext",
    "aclose",
    "configure",
    "get_context",
    "publish_change",
    "redis_client",
    "watch_changes",
]

log = logging.getLogger("postbus.maps")

DEFAULT_CACHE_SIZE = 100_000
DEFAULT_CACHE_TTL = 30.0
#: Seconds to wait for Redis before a lookup becomes a temporary error.
REDIS_TIMEOUT = 5.0


@dataclass
class MapsContext:
    redis_url: str
    nats_client: Any = None
    cache: LookupCache = field(default_factory=LookupCache)
    #: Seconds to wait for a connection to Redis (a command-line tool waits less).
    connect_timeout: float = REDIS_TIMEOUT
    #: Per table id: what :mod:`postbus.maps.sync` last saw of its compiled file.
    files: dict[str, Any] = field(default_factory=dict)
    _client: Redis | None = None
    _loop: asyncio.AbstractEventLoop | None = None


_ctx: MapsContext | None = None


def _default_url() -> str:
    return os.environ.get("POSTBUS_REDIS_URL") or PARAMS["postbus_redis_url"].default


def configure(
    redis_url: str,
    nats_client: Any = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
    cache_ttl: float = DEFAULT_CACHE_TTL,
    connect_timeout: float = REDIS_TIMEOUT,
) -> MapsContext:
    """Set this process's maps context (replacing an earlier one); returns it."""
    global _ctx
    old = _ctx
    _ctx = MapsContext(redis_url, nats_client, LookupCache(cache_size, cache_ttl),
                       connect_timeout)
    if old is not None and old._client is not None:
        _discard(old)
    return _ctx


def get_context() -> MapsContext:
    """The current context, created from the environment on first use."""
    global _ctx
    if _ctx is None:
        _ctx = MapsContext(_default_url())
    return _ctx


_driver: DriverInfo | None = None


def _driver_info() -> DriverInfo:
    """redis-py's name and version for CLIENT SETINFO, looked up once: without it
    redis-py asks importlib.metadata (a walk of sys.path) for every new connection."""
    global _driver
    if _driver is None:
        _driver = DriverInfo()
    return _driver


def redis_client() -> Redis:
    """The Redis client of the running event loop (created on first use)."""
    ctx = get_context()
    loop = asyncio.get_running_loop()
    if ctx._client is None or ctx._loop is not loop:
        if ctx._client is not None:
            _discard(ctx)
        ctx._client = Redis.from_url(
            ctx.redis_url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=ctx.connect_timeout,
            retry=Retry(NoBackoff(), 1),  # once, for a connection Redis closed; no backoff
            decode_responses=False,
            driver_info=_driver_info(),
        )
        ctx._loop = loop
    return ctx._client


def _discard(ctx: MapsContext) -> None:
    """Close a client from another (or this) loop without awaiting it there."""
    client, loop = ctx._client, ctx._loop
    ctx._client = ctx._loop = None
    if client is None:
        return
    redis_script.forget(client)
    if loop is not None and not loop.is_closed():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(client.aclose())
            return
    # The loop is gone: its sockets cannot be awaited; drop the connections.
    pool = client.connection_pool
    for conn in list(getattr(pool, "_available_connections", ())) + list(
        getattr(pool, "_in_use_connections", ())
    ):
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing to stop
                writer.transport.abort()
            conn._reader = conn._writer = None


async def aclose() -> None:
    """Close the Redis client of the context (service shutdown, test teardown)."""
    ctx = get_context()
    client, ctx._client, ctx._loop = ctx._client, None, None
    if client is not None:
        redis_script.forget(client)
        await client.aclose()


async def publish_change(spec: str, nc: Any = None) -> None:
    """Announce that table ``spec`` changed: drop it from our cache, publish on the bus.

    ``nc`` (a connected nats client) defaults to the context's; without
    one only the local cache is cleared.
    """
    ctx = get_context()
    ctx.cache.invalidate(spec)
    client = nc if nc is not None else ctx.nats_client
    if client is not None:
        await client.publish(MAPS_CHANGED_SUBJECT, spec.encode("utf-8", "surrogateescape"))
        await client.flush()


async def watch_changes(nc: Any) -> Any:
    """Subscribe to table-change events; each drops that table's cached answers.

    Returns the subscription (``await sub.unsubscribe()`` to stop).
    """

    async def changed(msg: Any) -> None:
        spec = msg.data.decode("utf-8", "surrogateescape")
        log.debug("table %s changed: dropping its cached lookups", spec)
        get_context().cache.invalidate(spec)

    return await nc.subscribe(MAPS_CHANGED_SUBJECT, cb=changed)
