"""An indexed table as postmap sees it: the compiled file beside the source, and Redis's copy.

``postmap`` works whether or not the system or its Redis runs:

* a build writes the compiled file (:mod:`postbus.maps.compiled`) and,
  when the system's Redis answers, loads the same build (same stamp) into
  Redis; with Redis down the running roles load the file once it is back
  (:mod:`postbus.maps.sync`), and a system started later loads it at its
  first lookup;
* ``-q`` and ``-s`` read the newer of the two copies (the compiled file
  when they are the same build, so Redis need not run), which is the
  table the system serves;
* ``-i`` and ``-d`` change the newer copy and bring Redis's up to it.

A Redis that refuses the connection (the system is stopped) is no error;
postmap says so only with ``-v``.  Any other Redis failure is a warning:
the compiled file is still built and the roles load it later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from postbus.cli.maptool import Fatal
from postbus.maps import context, store
from postbus.maps.compiled import CompiledTable, NotCompiledTable, db_path, write_table
from postbus.maps.stamp import new_stamp, newer
from postbus.maps.table import TableRetry
from postbus.maps.types.redis_table import table_id

__all__ = ["IndexedTable", "Reader", "RedisLink", "as_owner", "creation_mode"]

log = logging.getLogger("postbus.maps")


class RedisLink:
    """The system's Redis, asked once whether it runs; None from :meth:`client` when not."""

    def __init__(self) -> None:
        self._up: bool | None = None

    async def client(self) -> Redis | None:
        if self._up is None:
            try:
                await store.call(context.redis_client().ping, "redis")
                self._up = True
            except TableRetry as exc:
                self.down(exc)
        return context.redis_client() if self._up else None

    def down(self, exc: TableRetry) -> None:
        """Stop using Redis for this run; say why (quietly when it is merely not running)."""
        self._up = False
        cause = exc.__cause__
        stopped = isinstance(cause, (RedisConnectionError, RedisTimeoutError, OSError)) and (
            not isinstance(cause, AuthenticationError))
        (log.info if stopped else log.warning)(
            "%s: %s; the tables are built beside their source files and the system"
            " loads them into Redis when it runs", context.get_context().redis_url,
            str(exc).removeprefix("redis: redis: "))


class Reader(Protocol):
    async def get(self, key: str) -> str | None: ...

    def items(self) -> AsyncIterator[tuple[str, str]]: ...


class _FileReader:
    def __init__(self, db: CompiledTable) -> None:
        self.db = db

    async def get(self, key: str) -> str | None:
        return self.db.get_many([key])[0]

    async def items(self) -> AsyncIterator[tuple[str, str]]:
        for item in self.db.items():
            yield item


class _RedisReader:
    def __init__(self, r: Redis, tid: str) -> None:
        self.r, self.tid = r, tid

    async def get(self, key: str) -> str | None:
        return (await store.get(self.r, self.tid, key))[1]

    def items(self) -> AsyncIterator[tuple[str, str]]:
        return store.dump_table(self.r, self.tid)


def creation_mode(source: os.stat_result | None, save_perm: bool) -> int:
    """A new database file's mode, as postmap makes it: 0644, less the source's missing bits."""
    umask = 0o022
    if save_perm and source is not None and stat.S_ISREG(source.st_mode):
        umask |= ~source.st_mode & 0o077
    return 0o644 & ~umask


@contextlib.contextmanager
def as_owner(source: os.stat_result | None, path: str, enabled: bool) -> Iterator[None]:
    """Run as the source file's owner when started as root (postmap.c's set_eugid), then back."""
    if not enabled or source is None or os.getuid() != 0:
        yield
        return
    if source.st_uid == 0:
        folder = os.path.dirname(path) or "."
        with contextlib.suppress(OSError):
            if os.stat(folder).st_uid != 0:
                log.warning("Creating root-owned database file(s) %s.* in non-root-owned"
                            " directory %s. Files %s, %s.*, and directory %s should have the"
                            " same owner. Please fix ownership to avoid a privilege-escalation"
                            " attack.", path, folder, path, path, folder)
        yield
        return
    euid, egid, groups = os.geteuid(), os.getegid(), os.getgroups()
    os.seteuid(0)
    os.setgroups([source.st_gid])
    os.setegid(source.st_gid)
    os.seteuid(source.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setgroups(groups)
        os.setegid(egid)
        os.seteuid(euid)


class IndexedTable:
    """One ``hash:``/``btree:``/... table: its compiled file and Redis's copy."""

    def __init__(self, type_name: str, name: str, redis: RedisLink) -> None:
        self.type_name, self.name, self.redis = type_name, name, redis
        self.id = table_id(type_name, name)
        self.path = db_path(type_name, name)
        #: Whether the last change reached Redis (then the change event is due).
        self.in_redis = False

    def _fatal(self, reason: str) -> Fatal:
        return Fatal(f"open database {self.path}: {reason}")

    def _open_file(self, writable: bool = False) -> CompiledTable | None:
        """The compiled file, None when there is none; Fatal when it cannot be used."""
        try:
            if writable and os.path.exists(self.path) and not os.access(self.path, os.W_OK):
                raise PermissionError(13, os.strerror(13))
            return CompiledTable(self.path, self.type_name, writable=writable)
        except FileNotFoundError:
            return None
        except NotCompiledTable as exc:
            raise self._fatal(str(exc)) from None
        except OSError as exc:
            raise self._fatal(exc.strerror or str(exc)) from None

    async def _redis_stamp(self) -> tuple[Redis | None, str | None]:
        r = await self.redis.client()
        if r is None:
            return None, None
        try:
            return r, await store.table_stamp(r, self.id)
        except TableRetry as exc:
            self.redis.down(exc)
            return None, None

    async def reader(self) -> Reader:
        """The newer copy for -q and -s; Fatal when the table was never built."""
        db = self._open_file()
        r, redis_stamp = await self._redis_stamp()
        if db is not None and not newer(redis_stamp, db.stamp):
            return _FileReader(db)
        if r is not None and redis_stamp is not None:
            if db is not None:
                db.close()
            return _RedisReader(r, self.id)
        raise self._fatal("No such file or directory")

    async def build(self, pairs: dict[str, str], mode: int) -> None:
        """Compile the whole table beside its source; load the same build into Redis."""
        stamp = new_stamp()
        try:
            write_table(self.path, self.type_name, pairs.items(), stamp, mode)
        except NotCompiledTable as exc:
            raise self._fatal(str(exc)) from None
        except OSError as exc:
            raise self._fatal(exc.strerror or str(exc)) from None
        await self._to_redis(lambda r: store.replace_table(r, self.id, pairs.items(), stamp))

    async def existing(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` the newer copy holds (for -i's duplicate warnings)."""
        try:
            target = await self.reader()
        except Fatal:
            return set()
        return {k for k in keys if await target.get(k) is not None}

    async def add(self, pairs: dict[str, str], mode: int) -> None:
        """``-i``: add or replace entries in the newer copy, then bring Redis's up to it."""
        db = self._open_file(writable=True)
        r, redis_stamp = await self._redis_stamp()
        stamp = new_stamp()
        if db is None and r is not None and redis_stamp is not None:
            await self._to_redis(lambda r: store.update_table(r, self.id, pairs.items(),
                                                              "replace", stamp))
            return
        if db is None or newer(redis_stamp, db.stamp):
            if db is not None:
                db.close()
            # no copy yet, or only an older file beside a newer Redis copy: start the file anew
            existing = await self._redis_items(r) if redis_stamp is not None else {}
            await self.build({**existing, **pairs}, mode)
            return
        with db:
            old = db.stamp
            db.update(pairs.items(), stamp)
            if redis_stamp == old:
                await self._to_redis(lambda r: store.update_table(r, self.id, pairs.items(),
                                                                  "replace", stamp))
            else:
                await self._to_redis(lambda r: store.replace_table(r, self.id, db.items(), stamp))

    async def delete(self, keys: list[str]) -> bool:
        """``-d``: delete keys from the newer copy (Redis's follows); whether any was there."""
        db = self._open_file(writable=True)
        r, redis_stamp = await self._redis_stamp()
        stamp = new_stamp()
        if db is not None and not newer(redis_stamp, db.stamp):
            with db:
                old = db.stamp
                found = db.delete(keys, stamp)
                if any(found) and redis_stamp == old:
                    await self._to_redis(lambda r: store.delete_keys(r, self.id, keys, stamp))
                elif any(found):
                    await self._to_redis(
                        lambda r: store.replace_table(r, self.id, db.items(), stamp))
            return any(found)
        if db is not None:
            db.close()
        if r is None or redis_stamp is None:
            raise self._fatal("No such file or directory")
        _, found = await store.delete_keys(r, self.id, keys, stamp)
        self.in_redis = any(found)
        return any(found)

    async def _redis_items(self, r: Redis | None) -> dict[str, str]:
        assert r is not None
        return {k: v async for k, v in store.dump_table(r, self.id)}

    async def _to_redis(self, change: Callable[[Redis], Awaitable[object]]) -> None:
        """Apply ``change(redis)`` when Redis runs; a failure leaves it to the roles (warning)."""
        r = await self.redis.client()
        if r is None:
            return
        try:
            await change(r)
        except TableRetry as exc:
            self.redis.down(exc)
            return
        self.in_redis = True
