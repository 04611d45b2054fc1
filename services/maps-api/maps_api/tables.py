"""What maps-api serves: which tables may be read, how a name finds them, writes.

Reads (HTTP lookups, socketmap, tcp_table) go through the shared maps
library, ``open_table(spec)`` then ``await table.lookup(key)``, so every
type answers exactly as in the services.  Like proxymap(8), maps-api does
not open any table a client names (that would let anyone read any
``key value`` file on the host): a table is *approved* when it is

* named ``proxy:type:name`` in ``proxy_read_maps`` (Postfix's rule), or
* stored in Redis (uploaded through this API or loaded with ``postbus postmap``),
  or compiled by ``postbus postmap`` beside its source on this host (loaded
  into Redis at the first request, :mod:`postbus.maps.sync`), or
* one of the ``postbus_maps_api_tcp_maps`` the administrator exposes.

A socketmap name is resolved in this order: a stored table whose name (or
the last ``/`` part of it) is the socketmap name; then a main.cf parameter
of that name (``virtual_alias_maps``), whose tables are searched in order
(first match, as maps_find()).  Every table must be approved.

Writes go to :mod:`postbus.maps.store` (atomic replace, a version per
change) and are announced on the bus; see :class:`RedisStore`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from maps_api import settings
from postbus.config.loader import Config
from postbus.maps import context, store, sync
from postbus.maps.compiled import db_path
from postbus.maps.table import (
    Table,
    TableConfigError,
    TableRetry,
    fold_key,
    open_table,
    split_spec,
)
from postbus.maps.types import redis_table
from postbus.maps.types._syntax import split_tokens
from postbus.maps.types.hashfile import INDEXED_TYPES

log = logging.getLogger("postbus.maps_api")

MAX_OPEN_TABLES = 512  # open Table objects kept (they hold parsed files and connections)
STORED_LIST_TTL = 5.0  # seconds a listing of stored tables is trusted for approval


class NotApproved(Exception):
    """The table is not one maps-api serves (HTTP 403, socketmap PERM, tcp 400)."""


class UnknownName(Exception):
    """A socketmap name that names no table."""


STORED_TYPES = frozenset({*INDEXED_TYPES, "redis"})


class RedisStore:
    """Writes through :mod:`postbus.maps.store`, then the change event (context.publish_change).

    Keys are case-folded as ``postbus postmap`` stores them (fixed tables).
    A change that cannot be announced on the bus is still made; the reply
    says ``"published": false`` and services see it when their cache TTL ends.
    """

    def __init__(self, nc: Any = None) -> None:
        self.nc = nc

    @staticmethod
    def table_id(spec: str) -> str:
        """The stored table's id; TableConfigError for a table that is not kept in Redis."""
        typ, name = split_spec(spec)
        if typ not in STORED_TYPES or not name:
            raise TableConfigError(
                f"{spec}: only {', '.join(sorted(STORED_TYPES))} tables are stored in Redis"
            )
        if typ != "redis" and not name.startswith("/"):
            raise TableConfigError(f"{spec}: the name of a {typ}: table is an absolute path")
        return redis_table.table_id(typ, name)

    async def list_tables(self) -> list[dict[str, Any]]:
        r = context.redis_client()
        out = []
        for table_id in await store.list_tables(r):
            version = await store.table_version(r, table_id)
            try:
                entries = max(0, int(await r.hlen(store.data_key(table_id))) - 1)
            except (RedisError, OSError) as exc:
                raise TableRetry(f"{table_id}: redis: {exc}") from exc
            out.append({"table": table_id, "version": version, "entries": entries})
        return out

    async def publish(self, spec: str) -> bool:
        try:
            await context.publish_change(self.table_id(spec), self.nc)
        except Exception as exc:
            log.warning("%s: cannot publish the change event: %s", spec, exc)
            return False
        return self.nc is not None or context.get_context().nats_client is not None

    async def replace_table(self, spec: str, entries: Mapping[str, str]) -> int:
        pairs = {fold_key(k): v for k, v in entries.items()}
        return await store.replace_table(context.redis_client(), self.table_id(spec), pairs.items())

    async def add_entries(self, spec: str, entries: Mapping[str, str]) -> int:
        pairs = [(fold_key(k), v) for k, v in entries.items()]
        version, _ = await store.update_table(
            context.redis_client(), self.table_id(spec), pairs, mode="replace"
        )
        return version

    async def delete_key(self, spec: str, key: str) -> int | None:
        version, found = await store.delete_keys(
            context.redis_client(), self.table_id(spec), [fold_key(key)]
        )
        return version if found[0] else None


def unproxied(spec: str) -> str:
    """maps-api opens the proxied table itself: ``proxy:hash:x`` → ``hash:x``."""
    while spec.startswith("proxy:"):
        spec = spec[len("proxy:"):]
    return spec


class TableService:
    """Approved tables of one maps-api process, opened once and kept."""

    def __init__(self, cfg: Config, writer: RedisStore | None = None) -> None:
        self.cfg = cfg
        self.store = writer if writer is not None else RedisStore()
        self.token = cfg.get(settings.TOKEN)
        self.tcp_maps = [unproxied(s) for s in split_tokens(cfg.get(settings.TCP_MAPS))]
        read_maps = split_tokens(cfg.get(settings.PROXY_READ_MAPS))
        self.proxy_read = {unproxied(s) for s in read_maps if s.startswith("proxy:")}
        self._open: OrderedDict[str, Table] = OrderedDict()
        self._stored: set[str] = set()
        self._stored_at = float("-inf")

    # -- reading ---------------------------------------------------------------

    def table(self, spec: str) -> Table:
        """The open table for ``spec`` (a bad spec gives a table whose lookups fail)."""
        table = self._open.get(spec)
        if table is None:
            table = open_table(spec)
            self._open[spec] = table
            while len(self._open) > MAX_OPEN_TABLES:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(spec)
        return table

    def forget(self, spec: str) -> None:
        self._open.pop(spec, None)
        self._stored_at = float("-inf")

    async def stored_tables(self) -> set[str]:
        """Specs of the tables in Redis (listing cached for a few seconds)."""
        now = time.monotonic()
        if now - self._stored_at > STORED_LIST_TTL:
            self._stored = {str(info["table"]) for info in await self.store.list_tables()}
            self._stored_at = now
        return self._stored

    async def approve(self, spec: str) -> str:
        """The spec to open for a client's ``spec``; NotApproved when not served."""
        spec = unproxied(spec.strip())
        if spec in self.proxy_read or spec in self.tcp_maps:
            return spec
        try:
            stored = await self.stored_tables()
        except Exception as exc:  # Redis down: we cannot tell, so it is temporary
            raise TableRetry(f"cannot list stored tables: {exc}") from exc
        with contextlib.suppress(TableConfigError):
            canonical = RedisStore.table_id(spec)
            if canonical in stored or await _load_compiled(canonical):
                return canonical
        raise NotApproved(f"table {spec} is not approved for read access"
                          " (not stored, not proxy: in proxy_read_maps)")

    async def lookup(self, spec: str, key: str) -> str | None:
        """Look ``key`` up in one approved table; raises TableRetry or NotApproved."""
        spec = await self.approve(spec)
        return await self.table(spec).lookup(key)

    async def lookup_first(self, specs: list[str], key: str) -> str | None:
        """The first table's answer (≈ maps_find() with a full key); stops at TableRetry."""
        for spec in specs:
            value = await self.table(spec).lookup(key)
            if value is not None:
                return value
        return None

    async def resolve_name(self, name: str) -> list[str]:
        """The approved tables a socketmap ``name`` stands for; UnknownName or NotApproved."""
        try:
            stored = await self.stored_tables()
        except Exception as exc:
            raise TableRetry(f"cannot list stored tables: {exc}") from exc
        exact = [s for s in stored if s.partition(":")[2] == name]
        base = [s for s in stored if s.partition(":")[2].rsplit("/", 1)[-1] == name]
        for found in (exact, base):
            if len(found) == 1:
                return found
            if len(found) > 1:
                raise UnknownName(f"socketmap name {name} is ambiguous: {', '.join(sorted(found))}")
        if _is_parameter(self.cfg, name):
            specs = [unproxied(s) for s in split_tokens(self.cfg.get(name))]
            if not specs or any(":" not in s for s in specs):
                raise UnknownName(f"parameter {name} does not name lookup tables")
            for spec in specs:
                await self.approve(spec)
            return specs
        raise UnknownName(f"no table named {name}")

    # -- writing ---------------------------------------------------------------

    async def replace(self, spec: str, entries: Mapping[str, str]) -> tuple[int, bool]:
        """Replace a whole table; (new version, change event published)."""
        version = await self.store.replace_table(spec, entries)
        self.forget(spec)
        return version, await self.store.publish(spec)

    async def add(self, spec: str, entries: Mapping[str, str]) -> tuple[int, bool]:
        version = await self.store.add_entries(spec, entries)
        self.forget(spec)
        return version, await self.store.publish(spec)

    async def delete(self, spec: str, key: str) -> tuple[int | None, bool]:
        """(new version or None when the key was not there, event published)."""
        version = await self.store.delete_key(spec, key)
        if version is None:
            return None, False
        self.forget(spec)
        return version, await self.store.publish(spec)


async def _load_compiled(table_id: str) -> bool:
    """Whether an indexed table not yet in Redis is there now, loaded from its compiled file.

    ``postbus postmap`` may have built it before the system started; no role
    has looked it up yet (:mod:`postbus.maps.sync`).
    """
    typ, _, name = table_id.partition(":")
    if typ not in INDEXED_TYPES:
        return False
    await sync.refresh(table_id, db_path(typ, name), typ, force=True)
    return await store.is_loaded(context.redis_client(), table_id)


def _is_parameter(cfg: Config, name: str) -> bool:
    try:
        cfg.raw(name)
    except KeyError:
        return False
    return True


__all__ = [
    "NotApproved",
    "RedisStore",
    "TableService",
    "UnknownName",
    "unproxied",
]
