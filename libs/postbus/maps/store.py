"""Lookup tables stored in Redis (the place of Postfix's .db/.lmdb/.cdb files).

Key scheme (one table = one Redis HASH, plus a version counter)::

    postbus:map:<type>:<name>       HASH  key -> value, plus the field "\\0" (loaded marker)
    postbus:mapver:<type>:<name>    STRING version, incremented on every change
    postbus:maptmp:<type>:<name>:<random>   a table being loaded (expires after an hour)

``<type>:<name>`` is the table id: for the indexed types (hash, btree,
lmdb, cdb, dbm, sdbm) the name is the absolute path of the source file, as
``postmap`` was given it (``hash:/etc/postbus/virtual``); for ``redis:name``
it is the name.  Keys are stored already case-folded (unless built with
``postmap -f``), as Postfix stores them in a .db file.

The marker field ``"\\0"`` (a key no Postfix table can contain) exists in
every loaded table, even an empty one, so one ``HMGET key k "\\0"`` tells a
missing key from a table that was never built (Postfix: "open database
....db: No such file or directory").  Its value is the table's build
stamp (:mod:`postbus.maps.stamp`): the stamp of the compiled file it was
loaded from, or of the change that maps-api or postmap made last, so a
process that finds a newer compiled file loads it
(:mod:`postbus.maps.sync`) and an older one is left alone.

A full load writes a temporary hash in pipelined batches and then, in one
MULTI/EXEC, RENAMEs it over the live key and increments the version:
readers see the old table or the new one, never half of one.
:func:`replace_if_newer` does the same under WATCH, so a slow load of an
old file never replaces a newer table that arrived meanwhile.

Every Redis failure raises :class:`~postbus.maps.table.TableRetry`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Literal, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from postbus.maps.stamp import new_stamp, newer
from postbus.maps.table import TableRetry

__all__ = [
    "DATA_PREFIX",
    "MARKER",
    "call",
    "delete_keys",
    "drop_table",
    "dump_table",
    "get",
    "get_many",
    "is_loaded",
    "list_tables",
    "replace_if_newer",
    "replace_table",
    "table_stamp",
    "table_version",
    "update_table",
]

DATA_PREFIX = "postbus:map:"
VERSION_PREFIX = "postbus:mapver:"
TMP_PREFIX = "postbus:maptmp:"
MARKER = b"\0"
#: Pairs per HSET command and commands per pipeline round trip when loading.
BATCH = 1000
PIPELINE_DEPTH = 20
TMP_TTL = 3600

T = TypeVar("T")


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def data_key(table_id: str) -> bytes:
    return _b(DATA_PREFIX + table_id)


def version_key(table_id: str) -> bytes:
    return _b(VERSION_PREFIX + table_id)


async def call(op: Callable[[], Awaitable[T]], table_id: str) -> T:
    """Run a Redis operation; any Redis or socket failure is a temporary error."""
    try:
        return await op()
    except (RedisError, OSError) as exc:
        raise TableRetry(f"{table_id}: redis: {exc}") from exc


async def get(r: Redis, table_id: str, key: str) -> tuple[bool, str | None]:
    """``(loaded, value)`` of one key in one round trip; value None when absent."""
    value, marker = await call(lambda: r.hmget(data_key(table_id), [_b(key), MARKER]), table_id)
    return marker is not None, None if value is None else _s(value)


async def get_many(r: Redis, table_id: str, keys: list[str]) -> tuple[bool, list[str | None]]:
    """``(loaded, values)`` for many keys in one round trip."""
    raw = await call(lambda: r.hmget(data_key(table_id), [*map(_b, keys), MARKER]), table_id)
    return raw[-1] is not None, [None if v is None else _s(v) for v in raw[:-1]]


async def is_loaded(r: Redis, table_id: str) -> bool:
    return bool(await call(lambda: r.hexists(data_key(table_id), MARKER), table_id))


async def table_stamp(r: Redis, table_id: str) -> str | None:
    """The stamp of Redis's copy of the table; None when it was never loaded."""
    raw = await call(lambda: r.hget(data_key(table_id), MARKER), table_id)
    return None if raw is None else _s(raw)


async def table_version(r: Redis, table_id: str) -> int:
    """The table's version: 0 before the first load, then +1 per change."""
    raw = await call(lambda: r.get(version_key(table_id)), table_id)
    return int(raw or 0)


async def _write_batches(r: Redis, key: bytes, pairs: Iterable[tuple[str, str]],
                         table_id: str, command: str = "HSET") -> list[int]:
    """Write pairs to hash ``key`` in pipelined batches; return each command's reply."""
    replies: list[int] = []

    async def flush(batches: list[list[bytes]]) -> None:
        pipe = r.pipeline(transaction=False)
        for batch in batches:
            pipe.execute_command(command, key, *batch)
        replies.extend(await call(pipe.execute, table_id))

    batches: list[list[bytes]] = []
    batch: list[bytes] = []
    per_command = BATCH if command == "HSET" else 1
    for k, v in pairs:
        batch += (_b(k), _b(v))
        if len(batch) >= 2 * per_command:
            batches.append(batch)
            batch = []
            if len(batches) >= (PIPELINE_DEPTH if command == "HSET" else BATCH):
                await flush(batches)
                batches = []
    if batch:
        batches.append(batch)
    if batches:
        await flush(batches)
    return replies


async def _load_tmp(r: Redis, table_id: str, pairs: Iterable[tuple[str, str]],
                    stamp: str) -> bytes:
    """Write the pairs to a fresh temporary hash (expiring); return its key."""
    tmp = _b(f"{TMP_PREFIX}{table_id}:{secrets.token_hex(8)}")
    try:
        await call(lambda: r.hset(tmp, MARKER, _b(stamp)), table_id)
        await call(lambda: r.expire(tmp, TMP_TTL), table_id)
        await _write_batches(r, tmp, pairs, table_id)
    except BaseException:
        await _drop(r, tmp)
        raise
    return tmp


async def _drop(r: Redis, tmp: bytes) -> None:
    with contextlib.suppress(RedisError, OSError):  # else it expires on its own
        await r.delete(tmp)


async def replace_table(r: Redis, table_id: str, pairs: Iterable[tuple[str, str]],
                        stamp: str | None = None) -> int:
    """Replace the whole table atomically with ``pairs``; return the new version.

    ``stamp`` is the build's (a compiled file's); a new one by default.
    """
    tmp = await _load_tmp(r, table_id, pairs, stamp or new_stamp())
    try:
        pipe = r.pipeline(transaction=True)
        pipe.rename(tmp, data_key(table_id))
        pipe.persist(data_key(table_id))
        pipe.incr(version_key(table_id))
        replies = await call(pipe.execute, table_id)
    except BaseException:
        await _drop(r, tmp)
        raise
    return int(replies[-1])


async def replace_if_newer(r: Redis, table_id: str, pairs: Iterable[tuple[str, str]],
                           stamp: str) -> int | None:
    """Replace the table with a build stamped ``stamp`` unless Redis's copy is as new.

    Returns the new version, or None when Redis already held this build or
    a newer one (checked before the load and again, under WATCH, at the swap).
    """
    if not newer(stamp, await table_stamp(r, table_id)):
        return None
    tmp = await _load_tmp(r, table_id, pairs, stamp)
    try:
        while True:
            try:
                return await call(lambda: _swap_if_newer(r, table_id, tmp, stamp), table_id)
            except TableRetry as exc:
                if not isinstance(exc.__cause__, WatchError):
                    raise
    finally:
        await _drop(r, tmp)  # gone after a swap; left when Redis held a newer copy


async def _swap_if_newer(r: Redis, table_id: str, tmp: bytes, stamp: str) -> int | None:
    """One WATCH/MULTI attempt of :func:`replace_if_newer` (WatchError: try again)."""
    live = data_key(table_id)
    async with r.pipeline(transaction=True) as pipe:
        await pipe.watch(live)
        current = await pipe.hget(live, MARKER)
        if not newer(stamp, None if current is None else _s(current)):
            return None
        pipe.multi()
        pipe.rename(tmp, live)
        pipe.persist(live)
        pipe.incr(version_key(table_id))
        replies = await pipe.execute()
        return int(replies[-1])


Mode = Literal["warn", "replace", "ignore"]


async def update_table(r: Redis, table_id: str, pairs: Iterable[tuple[str, str]],
                       mode: Mode = "warn", stamp: str | None = None) -> tuple[int, list[str]]:
    """Add pairs to the table (created when missing); return (version, duplicate keys).

    ``mode`` is postmap's: "warn" and "ignore" keep an existing entry
    (``-w`` ignores silently, the caller warns for "warn"); "replace"
    (``-r``) overwrites it.  Each key is written atomically; readers may
    see some of the new keys before others, as with ``postmap -i``.
    ``stamp`` (new by default) becomes the table's.
    """
    items = list(pairs)
    key = data_key(table_id)
    await call(lambda: r.hset(key, MARKER, _b(stamp or new_stamp())), table_id)
    duplicates: list[str] = []
    if mode == "replace":
        await _write_batches(r, key, items, table_id)
    else:
        replies = await _write_batches(r, key, items, table_id, command="HSETNX")
        seen: set[str] = set()
        for (k, _), added in zip(items, replies, strict=True):
            if not added and k not in seen:
                duplicates.append(k)
            seen.add(k)
    version = await call(lambda: r.incr(version_key(table_id)), table_id)
    return int(version), duplicates


async def delete_keys(r: Redis, table_id: str, keys: list[str],
                      stamp: str | None = None) -> tuple[int, list[bool]]:
    """Delete keys; return (new version, whether each key existed).

    When something was deleted the table gets ``stamp`` (new by default).
    """
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.hdel(data_key(table_id), _b(k))
    found = [bool(n) for n in await call(pipe.execute, table_id)]
    if not any(found):
        return 0, found
    pipe = r.pipeline(transaction=True)
    pipe.hset(data_key(table_id), MARKER, _b(stamp or new_stamp()))
    pipe.incr(version_key(table_id))
    replies = await call(pipe.execute, table_id)
    return int(replies[-1]), found


async def dump_table(r: Redis, table_id: str) -> AsyncIterator[tuple[str, str]]:
    """Every ``(key, value)`` of the table, in Redis order (HSCAN: no long blocking)."""
    cursor = 0
    key = data_key(table_id)
    while True:
        cursor, chunk = await call(
            lambda c=cursor: r.hscan(key, c, count=1000), table_id  # type: ignore[misc]
        )
        assert isinstance(chunk, dict)
        for k, v in chunk.items():
            if k != MARKER:
                yield _s(k), _s(v)
        if cursor == 0:
            return


async def drop_table(r: Redis, table_id: str) -> None:
    """Remove a table entirely (it becomes "never built")."""
    await call(lambda: r.delete(data_key(table_id), version_key(table_id)), table_id)


async def list_tables(r: Redis) -> list[str]:
    """Ids (``type:name``) of every table stored in Redis, sorted."""
    found: set[str] = set()

    async def scan() -> None:
        async for raw in r.scan_iter(match=_b(DATA_PREFIX) + b"*", count=1000):
            found.add(_s(raw)[len(DATA_PREFIX):])

    await call(scan, "list_tables")
    return sorted(found)
