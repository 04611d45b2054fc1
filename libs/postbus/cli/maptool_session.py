"""One run of postmap or postalias: query, list, delete, build; then events and pushes.

The modes are postmap.c's (postmap_queries, postmap_seq, postmap_deletes,
postmap): output, messages and exit codes are Postfix's.  Indexed tables
go through :class:`~postbus.cli.maptool_tables.IndexedTable` (compiled
file and Redis's copy), ``redis:`` tables through Redis alone, the other
types are opened read-only with :func:`postbus.maps.table.open_table`.

After a change that reached Redis the run publishes the change event on
the bus (``postbus_nats_url``), so every replica drops its cached answers
at once; ``--push=URL`` also uploads each changed table to maps-api
(:mod:`postbus.cli.maptool_push`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from postbus.cli.maptool import Fatal, Options, Tool, parse_args, setup_logging
from postbus.cli.maptool_push import push_table
from postbus.cli.maptool_tables import IndexedTable, Reader, RedisLink, as_owner, creation_mode
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.maps import context, store
from postbus.maps.table import (
    Table,
    TableConfigError,
    TableRetry,
    fold_key,
    open_table,
    registered_types,
)
from postbus.maps.types.hashfile import INDEXED_TYPES
from postbus.maps.types.redis_table import database_name, table_id

__all__ = ["Session", "run_tool"]

log = logging.getLogger("postbus.maps")

STORED_TYPES = (*INDEXED_TYPES, "redis")
DEFAULT_TYPE = "hash"
#: Seconds postmap waits for Redis to accept a connection (a stopped system refuses at once).
CONNECT_TIMEOUT = 2.0


def split_map(arg: str) -> tuple[str, str]:
    typ, sep, name = arg.partition(":")
    if not sep:
        return DEFAULT_TYPE, arg
    return typ, name


class _RedisOnly:
    """A ``redis:name`` table: Redis's copy is the only one (an empty name is an empty table)."""

    def __init__(self, tid: str) -> None:
        self.tid = tid

    async def get(self, key: str) -> str | None:
        return (await store.get(context.redis_client(), self.tid, key))[1]

    def items(self) -> Any:
        return store.dump_table(context.redis_client(), self.tid)


class Session:
    """One command run: the parsed options, the tables opened, and what changed."""

    def __init__(self, tool: Tool, opts: Options, cfg: Config) -> None:
        self.tool, self.opts, self.cfg = tool, opts, cfg
        self.redis = RedisLink()
        self.changed: list[str] = []  # ids of the tables changed in Redis: events due
        self.to_push: list[IndexedTable] = []
        self._readers: dict[str, Reader] = {}
        self._tables: dict[str, Table] = {}

    # -- output -------------------------------------------------------------------------

    def show(self, typ: str, name: str, key: str, value: str) -> str | bytes:
        """The value as printed: base64-decoded with -F."""
        if not self.opts.base64:
            return value
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            dbname = f"{typ}:{database_name(typ, name)}"
            log.warning("table %s: key %s: malformed BASE64 value: %s", dbname, key, value)
            raise Fatal(f"table {dbname}: query error") from None

    def write(self, key: str | None, shown: str | bytes) -> None:
        data = shown if isinstance(shown, bytes) else shown.encode("utf-8", "surrogateescape")
        if key is not None:
            sys.stdout.buffer.write(
                (key + self.tool.separator).encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.write(data + b"\n")

    # -- tables ---------------------------------------------------------------------------

    async def reader(self, typ: str, name: str) -> Reader:
        """The copy a stored table is read from (opened once per run)."""
        tid = table_id(typ, name)
        found = self._readers.get(tid)
        if found is None:
            found = (_RedisOnly(tid) if typ == "redis"
                     else await IndexedTable(typ, name, self.redis).reader())
            self._readers[tid] = found
        return found

    async def lookup(self, arg: str, key: str) -> str | None:
        typ, name = split_map(arg)
        if typ in STORED_TYPES:
            reader = await self.reader(typ, name)
            return await reader.get(fold_key(key) if self.opts.fold else key)
        return await self.open(arg).lookup(key)

    def open(self, arg: str) -> Table:
        """Open a read-only table; a table that cannot be read is fatal, as in postmap."""
        if arg in self._tables:
            return self._tables[arg]
        quiet = _DropLookupErrors()
        logging.getLogger().handlers[0].addFilter(quiet)
        try:
            self._tables[arg] = open_table(arg, strict=True)
        except TableConfigError as exc:
            text = str(exc)
            raise Fatal(text[len(arg) + 2:] if text.startswith(arg + ": ") else text) from None
        finally:
            logging.getLogger().handlers[0].removeFilter(quiet)
        return self._tables[arg]

    def done(self, table: IndexedTable, changed: bool = True) -> None:
        if changed and table.in_redis:
            self.changed.append(table.id)
        if changed and self.opts.push is not None:
            self.to_push.append(table)

    # -- modes ----------------------------------------------------------------------------

    async def query(self) -> int:
        assert self.opts.query is not None
        if self.opts.query != "-":
            key = self.opts.query
            for arg in self.opts.maps:
                value = await self.lookup(arg, key) if key else None
                if value is not None:
                    self.write(None, self.show(*split_map(arg), key, value))
                    return 0
            return 1
        found = False
        for raw in sys.stdin.buffer:
            key = raw.decode("utf-8", "surrogateescape").rstrip("\n")
            if not key:
                continue
            for arg in self.opts.maps:
                value = await self.lookup(arg, key)
                if value is not None:
                    self.write(key, self.show(*split_map(arg), key, value))
                    found = True
                    break
        return 0 if found else 1

    async def sequence(self) -> int:
        for arg in self.opts.maps:
            typ, name = split_map(arg)
            if typ in STORED_TYPES:
                async for key, value in (await self.reader(typ, name)).items():
                    self.write(key, self.show(typ, name, key, value))
                continue
            items = _table_items(self.open(arg))
            if items is None:
                raise Fatal(f"table {arg}: sequence operation is not supported")
            for key, value in items:
                self.write(key, self.show(typ, name, key, value))
        return 0

    async def delete(self) -> int:
        assert self.opts.delete is not None
        keys = [self.opts.delete]
        if self.opts.delete == "-":
            keys = [k for raw in sys.stdin.buffer
                    if (k := raw.decode("utf-8", "surrogateescape").rstrip("\n"))]
        if self.opts.fold:
            keys = [fold_key(k) for k in keys]
        found = False
        for arg in self.opts.maps:
            typ, name = split_map(arg)
            if typ not in STORED_TYPES:
                self.open(arg)
                raise Fatal(f"{arg} map requires O_RDONLY access mode")
            if typ == "redis":
                tid = table_id(typ, name)
                _, deleted = await store.delete_keys(context.redis_client(), tid, keys)
                if any(deleted):
                    self.changed.append(tid)
                found |= any(deleted)
                continue
            table = IndexedTable(typ, name, self.redis)
            deleted_any = await table.delete(keys)
            self.done(table, deleted_any)
            found |= deleted_any
        return 0 if found else 1

    async def build(self) -> int:
        for arg in self.opts.maps:
            typ, name = split_map(arg)
            if self.opts.incremental:
                self.check_buildable(typ)
                await self.add(typ, name, sys.stdin.buffer.read(), _stdin_stat())
                continue
            try:  # postmap opens the source before the table
                with open(name, "rb") as fp:
                    text, source = fp.read(), os.fstat(fp.fileno())
            except OSError as exc:
                raise Fatal(f"open {name}: {exc.strerror}") from None
            self.check_buildable(typ)
            pairs = self.unique(typ, name, self.parse(text, name))
            pairs.update(self.tool.extra_entries(self.cfg))
            table = IndexedTable(typ, name, self.redis)
            with as_owner(source, name, self.opts.as_owner):
                await table.build(pairs, creation_mode(source, self.opts.save_perm))
            self.done(table)
        return 0

    def check_buildable(self, typ: str) -> None:
        if typ in INDEXED_TYPES or (typ == "redis" and self.opts.incremental):
            if typ == "redis" and self.opts.push is not None:
                raise Fatal("--push: redis: tables are kept in Redis only; use maps-api")
            return
        if typ not in registered_types():
            raise Fatal(f"unsupported dictionary type: {typ}. Is the postfix-{typ} package"
                        " installed?")
        raise Fatal(f"unsupported dictionary type: {typ} does not support bulk-mode creation.")

    def parse(self, raw: bytes, path: str) -> Iterator[tuple[int, str, str]]:
        return self.tool.parse(raw.decode("utf-8", "surrogateescape"), path, self.opts)

    def unique(self, typ: str, name: str, entries: Iterable[tuple[int, str, str]],
               existing: set[str] | None = None) -> dict[str, str]:
        """Apply postmap's duplicate policy (first wins + warning, -r last wins, -w first)."""
        pairs: dict[str, str] = {}
        seen = existing or set()
        for _, key, value in entries:
            if key in pairs or key in seen:
                if self.opts.dup_mode == "replace":
                    pairs[key] = value
                elif self.opts.dup_mode == "warn":
                    log.warning('%s: duplicate entry: "%s"', database_name(typ, name), key)
                continue
            pairs[key] = value
        return pairs

    async def add(self, typ: str, name: str, raw: bytes, source: os.stat_result | None) -> None:
        """``-i``: add the entries on stdin to the table, which keeps its other entries."""
        maps_log = logging.getLogger("postbus.maps")
        maps_log.disabled = True  # first pass only collects the keys
        try:
            keys = [key for _, key, _ in self.parse(raw, "stdin")]
        finally:
            maps_log.disabled = False
        if typ == "redis":
            tid = table_id(typ, name)
            _, values = await store.get_many(context.redis_client(), tid, keys)
            existing = {k for k, v in zip(keys, values, strict=True) if v is not None}
            pairs = self.unique(typ, name, self.parse(raw, "stdin"), existing)
            await store.update_table(context.redis_client(), tid, pairs.items(), mode="replace")
            self.changed.append(tid)
            return
        table = IndexedTable(typ, name, self.redis)
        existing = await table.existing(keys) if keys else set()
        pairs = self.unique(typ, name, self.parse(raw, "stdin"), existing)
        with as_owner(source, name, self.opts.as_owner):
            await table.add(pairs, creation_mode(source, self.opts.save_perm))
        self.done(table)

    # -- after a change -----------------------------------------------------------------

    async def announce(self) -> None:
        """Publish a change event per table changed in Redis, so every replica drops its cache.

        When no NATS answers, the roles still notice a rebuilt compiled file
        on their disk within a second (:mod:`postbus.maps.sync`); a warning
        is due only when main.cf names the bus explicitly.
        """
        if not self.changed:
            return
        nc: Any = None
        import nats

        async def quiet(exc: Exception) -> None:
            log.debug("NATS: %s", exc)

        try:  # two tries, then NoServersError (0 attempts would mean: try forever)
            nc = await nats.connect(self.cfg.get("postbus_nats_url"), connect_timeout=2,
                                    max_reconnect_attempts=1, reconnect_time_wait=0.1,
                                    allow_reconnect=False, error_cb=quiet)
        except Exception as exc:
            explicit = self.cfg.is_set("postbus_nats_url")
            (log.warning if explicit else log.info)(
                "cannot publish table change event: %s", exc)
        try:
            for tid in self.changed:
                await context.publish_change(tid, nc)
        finally:
            if nc is not None:
                await nc.close()

    async def push(self) -> None:
        for table in self.to_push:
            assert self.opts.push is not None
            entries = {k: v async for k, v in (await table.reader()).items()}
            await asyncio.to_thread(push_table, self.opts.push, self.cfg, table.id, entries)


def _stdin_stat() -> os.stat_result | None:
    try:
        return os.fstat(sys.stdin.fileno())
    except (OSError, ValueError):
        return None


class _DropLookupErrors(logging.Filter):
    """postmap reports an unreadable table once, as the fatal error, not also as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "lookup error" not in str(record.msg)


def _table_items(table: Table) -> list[tuple[str, str]] | None:
    """The entries of a read-only table that can list them (texthash, inline), else None."""
    from postbus.maps.types.hashfile import KeyValueFileTable
    from postbus.maps.types.inline import InlineTable

    if isinstance(table, KeyValueFileTable):
        return list(table.current().items())
    if isinstance(table, InlineTable):
        return list(table.table.items())
    return None


async def _run(tool: Tool, opts: Options, cfg: Config) -> int:
    context.configure(cfg.get("postbus_redis_url"), cache_size=0, cache_ttl=0,
                      connect_timeout=CONNECT_TIMEOUT)
    try:
        session = Session(tool, opts, cfg)
        if opts.query is not None:
            return await session.query()
        if opts.sequence:
            return await session.sequence()
        if opts.delete is not None:
            status = await session.delete()
        else:
            status = await session.build()
        await session.announce()
        await session.push()
        return status
    finally:
        with contextlib.suppress(Exception):
            await context.aclose()


def run_tool(tool: Tool, argv: list[str]) -> int:
    """Parse argv, load main.cf, run the command; print Postfix-style fatal errors."""
    try:
        opts = parse_args(tool, argv)
        try:
            cfg = Config.load(opts.config_dir, check_support=False)
        except (ConfigError, OSError) as exc:
            raise Fatal(str(exc)) from None
        setup_logging(tool.prog, opts.verbose)
        try:
            return asyncio.run(_run(tool, opts, cfg))
        except TableRetry as exc:
            raise Fatal(str(exc)) from None
    except Fatal as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{tool.prog}: fatal: {exc}\n")
        return 1
    finally:
        sys.stdout.flush()
