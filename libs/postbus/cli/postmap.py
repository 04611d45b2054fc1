"""postbus postmap: build, query and edit lookup tables, as postmap(1).

``postbus postmap hash:/etc/postbus/virtual`` parses the source file (the
same parser as ``texthash:``) and replaces the table in Redis atomically
(:func:`postbus.maps.store.replace_table`), then announces the change on
the bus when ``postbus_nats_url`` is set in main.cf or the environment.
The indexed types ``hash``, ``btree``, ``lmdb``, ``cdb``, ``dbm``, ``sdbm``
and ``redis:name`` are stored in Redis; the other types are read-only, as
in Postfix.

Flags, messages and exit codes are postmap's (3.7):

* ``-q key`` prints the first map's value (exit 0), or nothing (exit 1);
  ``-q -`` reads keys from stdin and prints ``key<TAB>value`` for each key
  found (exit 0 when at least one was found);
* ``-s`` prints every ``key<TAB>value`` (in Redis order, as postmap prints
  database order); ``-d key`` / ``-d -`` deletes (exit 0 when found);
* ``-i`` adds the entries on stdin to an existing table (``-r`` replaces
  existing keys silently, ``-w`` ignores them silently, else a warning);
* ``-f`` keeps case when building or querying; ``-F`` stores the
  base64-encoded contents of the files a value names, and base64-decodes
  values on ``-q``/``-s``;
* ``-N``, ``-n``, ``-o``, ``-p``, ``-u``, ``-U`` are accepted and change
  nothing here (NUL terminators, file ownership and modes do not apply to
  Redis); ``-b``, ``-h``, ``-m`` (message query modes) are not supported.

:func:`run_tool` is shared with ``postbus postalias`` (postalias.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import getopt
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
from postbus.maps.types._syntax import SPACE, split_tokens
from postbus.maps.types.hashfile import INDEXED_TYPES, iter_kv_source
from postbus.maps.types.redis_table import database_name, table_id

__all__ = ["POSTMAP", "Options", "Tool", "main", "run_tool"]

log = logging.getLogger("postbus.maps")

STORED_TYPES = (*INDEXED_TYPES, "redis")
DEFAULT_TYPE = "hash"


class Fatal(Exception):
    """Ends the command with ``<prog>: fatal: <text>`` and exit status 1."""


@dataclass
class Options:
    query: str | None = None
    delete: str | None = None
    sequence: bool = False
    incremental: bool = False
    fold: bool = True
    base64: bool = False
    dup_mode: store.Mode = "warn"
    verbose: int = 0
    message_mode: bool = False
    config_dir: str | None = None
    maps: list[str] = field(default_factory=list)


#: Parses a source text into (key, value) pairs, keys as they will be stored.
SourceParser = Callable[[str, str, Options], Iterator[tuple[int, str, str]]]


@dataclass
class Tool:
    """What differs between postmap and postalias."""

    prog: str
    optstring: str
    usage: str
    parse: SourceParser
    #: ``-q -`` and ``-s`` output line: postmap "key<TAB>value", postalias "key:<TAB>value".
    separator: str = "\t"
    #: Entries a full build adds (postalias: the sendmail/NIS signatures).
    extra_entries: Callable[[Config], list[tuple[str, str]]] = lambda cfg: []


class _StderrHandler(logging.Handler):
    """``postmap: warning: text`` on stderr, as Postfix's command-line tools print."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        level = {logging.WARNING: "warning: ", logging.ERROR: "error: ",
                 logging.CRITICAL: "fatal: "}.get(record.levelno, "")
        text = record.getMessage()
        if text.startswith(level):
            level = ""
        sys.stderr.write(f"{self.prog}: {level}{text}\n")
        sys.stderr.flush()


def _setup_logging(prog: str, verbose: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StderrHandler(prog))
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    for noisy in ("nats", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def parse_postmap_source(text: str, path: str, opts: Options) -> Iterator[tuple[int, str, str]]:
    """postmap's source syntax: ``key whitespace value`` (``-F``: value names files)."""
    for lineno, key, value in iter_kv_source(text, path, postmap=True):
        if opts.fold:
            key = fold_key(key)
        if opts.base64:
            encoded = _files_base64(value, path, lineno)
            if encoded is None:
                continue
            value = encoded
        yield lineno, key, value


def _files_base64(value: str, path: str, lineno: int) -> str | None:
    """``-F``: the base64 of the named files' contents, joined by newlines."""
    parts: list[bytes] = []
    for name in split_tokens(value, ", " + SPACE):
        try:
            with open(name, "rb") as fp:
                parts.append(fp.read())
        except OSError as exc:
            log.warning("%s, line %d: open %s: %s: skipping this entry",
                        path, lineno, name, exc.strerror)
            return None
    return base64.b64encode(b"\n".join(parts)).decode("ascii")


def _split_map(arg: str) -> tuple[str, str]:
    typ, sep, name = arg.partition(":")
    if not sep:
        return DEFAULT_TYPE, arg
    return typ, name


class Session:
    """One command run: the parsed options, the Redis client, and what changed."""

    def __init__(self, tool: Tool, opts: Options, cfg: Config) -> None:
        self.tool = tool
        self.opts = opts
        self.cfg = cfg
        self.redis = context.redis_client()
        self.changed: list[str] = []

    # -- values ---------------------------------------------------------------------

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

    # -- stored tables ------------------------------------------------------------------

    async def require_loaded(self, typ: str, name: str) -> str:
        tid = table_id(typ, name)
        if typ in INDEXED_TYPES and not await store.is_loaded(self.redis, tid):
            raise Fatal(f"open database {database_name(typ, name)}: No such file or directory")
        return tid

    async def lookup(self, arg: str, key: str) -> str | None:
        typ, name = _split_map(arg)
        if typ in STORED_TYPES:
            tid = await self.require_loaded(typ, name)
            _, value = await store.get(self.redis, tid, fold_key(key) if self.opts.fold else key)
            return value
        table = self.open(arg)
        return await table.lookup(key)

    def open(self, arg: str) -> Table:
        """Open a read-only table; a table that cannot be read is fatal, as in postmap."""
        quiet = _DropLookupErrors()
        logging.getLogger().handlers[0].addFilter(quiet)
        try:
            return open_table(arg, strict=True)
        except TableConfigError as exc:
            text = str(exc)
            raise Fatal(text[len(arg) + 2:] if text.startswith(arg + ": ") else text) from None
        finally:
            logging.getLogger().handlers[0].removeFilter(quiet)

    # -- modes ----------------------------------------------------------------------------

    async def query(self) -> int:
        assert self.opts.query is not None
        if self.opts.query != "-":
            key = self.opts.query
            for arg in self.opts.maps:
                value = await self.lookup(arg, key) if key else None
                if value is not None:
                    self.write(None, self.show(*_split_map(arg), key, value))
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
                    self.write(key, self.show(*_split_map(arg), key, value))
                    found = True
                    break
        return 0 if found else 1

    async def sequence(self) -> int:
        for arg in self.opts.maps:
            typ, name = _split_map(arg)
            if typ in STORED_TYPES:
                tid = await self.require_loaded(typ, name)
                async for key, value in store.dump_table(self.redis, tid):
                    self.write(key, self.show(typ, name, key, value))
                continue
            table = self.open(arg)
            items = _table_items(table)
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
            typ, name = _split_map(arg)
            if typ not in STORED_TYPES:
                self.open(arg)
                raise Fatal(f"{arg} map requires O_RDONLY access mode")
            tid = await self.require_loaded(typ, name)
            _, deleted = await store.delete_keys(self.redis, tid, keys)
            if any(deleted):
                found = True
                self.changed.append(tid)
        return 0 if found else 1

    async def build(self) -> int:
        for arg in self.opts.maps:
            typ, name = _split_map(arg)
            tid = table_id(typ, name)
            if self.opts.incremental:
                self.check_buildable(typ)
                await self.add(typ, name, tid, sys.stdin.buffer.read(), "stdin")
            else:
                try:  # postmap opens the source before the table
                    with open(name, "rb") as fp:
                        text = fp.read()
                except OSError as exc:
                    raise Fatal(f"open {name}: {exc.strerror}") from None
                self.check_buildable(typ)
                pairs = self.unique(typ, name, self.parse(text, name))
                pairs.update(self.tool.extra_entries(self.cfg))
                await store.replace_table(self.redis, tid, pairs.items())
            self.changed.append(tid)
        return 0

    def check_buildable(self, typ: str) -> None:
        if typ in STORED_TYPES and (typ != "redis" or self.opts.incremental):
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

    async def add(self, typ: str, name: str, tid: str, raw: bytes, path: str) -> None:
        """``-i``: add entries to the table, which keeps its other entries."""
        maps_log = logging.getLogger("postbus.maps")
        maps_log.disabled = True  # first pass only collects the keys
        try:
            keys = [key for _, key, _ in self.parse(raw, path)]
        finally:
            maps_log.disabled = False
        _, values = await store.get_many(self.redis, tid, keys) if keys else (True, [])
        existing = {k for k, v in zip(keys, values, strict=True) if v is not None}
        pairs = self.unique(typ, name, self.parse(raw, path), existing)
        await store.update_table(self.redis, tid, pairs.items(), mode="replace")

    async def announce(self) -> None:
        """Publish a change event per changed table when a NATS URL is configured."""
        if not self.changed:
            return
        nc: Any = None
        if self.cfg.is_set("postbus_nats_url"):
            import nats

            try:
                nc = await nats.connect(self.cfg.get("postbus_nats_url"), connect_timeout=2,
                                        max_reconnect_attempts=0, allow_reconnect=False)
            except Exception as exc:  # any failure only delays the caches (TTL)
                log.warning("cannot publish table change event: %s", exc)
        try:
            for tid in self.changed:
                await context.publish_change(tid, nc)
        finally:
            if nc is not None:
                await nc.close()


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


def parse_args(tool: Tool, argv: list[str]) -> Options:
    """getopt as Postfix does it (options may follow operands, as with glibc)."""
    opts = Options()
    try:
        pairs, rest = getopt.gnu_getopt(argv, tool.optstring)
    except getopt.GetoptError as exc:
        if "requires argument" in exc.msg:
            sys.stderr.write(f"{tool.prog}: option requires an argument -- '{exc.opt}'\n")
        else:
            sys.stderr.write(f"{tool.prog}: invalid option -- '{exc.opt}'\n")
        raise Fatal(tool.usage) from None
    for flag, value in pairs:
        if flag == "-c":
            opts.config_dir = value
        elif flag == "-d":
            if opts.sequence or opts.query is not None or opts.delete is not None:
                raise Fatal("specify only one of -s -q or -d")
            opts.delete = value
        elif flag == "-q":
            if opts.sequence or opts.delete is not None:
                raise Fatal("specify only one of -s -q or -d")
            opts.query = value
        elif flag == "-s":
            if opts.query is not None or opts.delete is not None:
                raise Fatal("specify only one of -s or -q or -d")
            opts.sequence = True
        elif flag == "-i":
            opts.incremental = True
        elif flag == "-f":
            opts.fold = False
        elif flag == "-F":
            opts.base64 = True
        elif flag == "-r":
            opts.dup_mode = "replace"
        elif flag == "-w":
            opts.dup_mode = "ignore"
        elif flag == "-v":
            opts.verbose += 1
        elif flag in ("-b", "-h", "-m"):
            opts.message_mode = True
    if opts.message_mode and opts.query != "-":
        raise Fatal('specify -b -h or -m only with "-q -"')
    if opts.message_mode:
        raise Fatal("-b, -h and -m (message query modes) are not supported")
    if not rest:
        raise Fatal(tool.usage)
    opts.maps = rest
    return opts


async def _run(tool: Tool, opts: Options, cfg: Config) -> int:
    context.configure(cfg.get("postbus_redis_url"), cache_size=0, cache_ttl=0)
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
        _setup_logging(tool.prog, opts.verbose)
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


POSTMAP = Tool(
    prog="postmap",
    optstring="bc:d:fFhimnNopq:rsuUvw",
    usage="usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key]"
          " [map_type:]file...",
    parse=parse_postmap_source,
)


def main(argv: list[str]) -> int:
    return run_tool(POSTMAP, argv)

