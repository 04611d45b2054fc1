"""The compiled form of an indexed table, beside its source (≈ Postfix's ``access.db``).

``postbus postmap hash:/etc/postbus/access`` compiles the source into
``/etc/postbus/access.db`` whether or not Redis runs, exactly where Postfix
puts its file (``.db`` for hash/btree, ``.lmdb``, ``.cdb``, ``.pag`` for
dbm/sdbm), so ``postmap -q`` works with the system stopped, and a system
started later finds the table and loads it into Redis
(:mod:`postbus.maps.sync`).  Why this design rather than a table store
that postmap would start on demand: see docs/postmap.md.

The format is an SQLite 3 database, which Python reads with no extra
service or package, looked up by an index like a .db file::

    PRAGMA application_id = 0x50627573 ("Pbus"), user_version = 1
    meta(name TEXT PRIMARY KEY, value TEXT)       -- "type" (hash...), "stamp"
    entries(key BLOB PRIMARY KEY, value BLOB)     -- keys as stored (folded unless -f)

Keys and values are UTF-8 bytes (undecodable input kept with
surrogateescape, as everywhere in the maps).  The ``stamp``
(:mod:`postbus.maps.stamp`) tells which of this file and Redis's copy is
newer.  A full build writes a temporary file and renames it over the old
one (readers see the old table or the new one); ``-i`` and ``-d`` change
the file in place in one SQLite transaction.

Real Postfix may share a directory with Postbus (a main.cf brought over
unchanged still names ``hash:/etc/postfix/access``): Postbus never
overwrites a file that is not one of its own tables
(:class:`NotCompiledTable`), so it cannot destroy Postfix's Berkeley DB
file, and it ignores such a file when reading.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterable, Iterator
from types import TracebackType
from urllib.parse import quote

__all__ = [
    "DB_SUFFIX",
    "CompiledTable",
    "NotCompiledTable",
    "db_path",
    "file_ident",
    "write_table",
]

#: The file name suffix Postfix gives each indexed type; ours is the same file name.
DB_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb",
             "dbm": ".pag", "sdbm": ".pag"}
APPLICATION_ID = 0x50627573  # "Pbus"
FORMAT = 1
_HEADER = b"SQLite format 3\0"
_SCHEMA = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {FORMAT}",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE entries (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
)

Ident = tuple[int, int, int, int]


class NotCompiledTable(Exception):
    """The file exists but is not a Postbus table of that type (Postfix's own .db, ...)."""


def db_path(type_name: str, name: str) -> str:
    """The compiled file of ``type:name``, as Postfix names it (``hash:/etc/x``: ``/etc/x.db``)."""
    return name + DB_SUFFIX[type_name]


def file_ident(path: str) -> Ident | None:
    """What a rebuild or an edit changes (device, inode, size, mtime); None when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def is_ours(path: str) -> bool:
    """Whether ``path`` is a Postbus compiled table, by its header (OSError: unreadable)."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # never block on a FIFO or read a device
        return False
    with open(path, "rb") as fp:
        head = fp.read(100)
    return (len(head) == 100 and head.startswith(_HEADER)
            and int.from_bytes(head[68:72], "big") == APPLICATION_ID)


class CompiledTable:
    """An open compiled table: lookups, listing, and in-place changes (``-i``, ``-d``)."""

    def __init__(self, path: str, type_name: str, *, writable: bool = False) -> None:
        """Open ``path``; OSError when it cannot be opened, NotCompiledTable when not ours."""
        self.path = path
        if not is_ours(path):
            raise NotCompiledTable("not a Postbus table (a Postfix database?)")
        uri = f"file:{quote(os.path.abspath(path))}?mode={'rw' if writable else 'ro'}"
        try:
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None)
            meta = dict(self.db.execute("SELECT name, value FROM meta"))
        except sqlite3.Error as exc:
            with contextlib.suppress(Exception):
                self.db.close()
            raise NotCompiledTable(str(exc)) from None
        if meta.get("type") != type_name:
            self.db.close()
            raise NotCompiledTable(f"holds a {meta.get('type')}: table, not {type_name}:")
        self.type_name = type_name
        self.stamp = meta.get("stamp", "")

    def __enter__(self) -> CompiledTable:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def get_many(self, keys: list[str]) -> list[str | None]:
        """The value of each key, None when absent."""
        out: list[str | None] = []
        for key in keys:
            row = self.db.execute("SELECT value FROM entries WHERE key = ?", (_b(key),)).fetchone()
            out.append(None if row is None else _s(row[0]))
        return out

    def items(self) -> Iterator[tuple[str, str]]:
        """Every ``(key, value)``, in key order."""
        for key, value in self.db.execute("SELECT key, value FROM entries ORDER BY key"):
            yield _s(key), _s(value)

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def update(self, pairs: Iterable[tuple[str, str]], stamp: str) -> None:
        """Add or replace entries, and restamp, in one transaction."""
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)",
                                ((_b(k), _b(v)) for k, v in pairs))
            self._restamp(stamp)

    def delete(self, keys: list[str], stamp: str) -> list[bool]:
        """Delete keys; whether each existed.  Restamped only when something went."""
        found: list[bool] = []
        with self._transaction():
            for key in keys:
                found.append(self.db.execute("DELETE FROM entries WHERE key = ?",
                                             (_b(key),)).rowcount > 0)
            if any(found):
                self._restamp(stamp)
        return found

    def _restamp(self, stamp: str) -> None:
        self.db.execute("UPDATE meta SET value = ? WHERE name = 'stamp'", (stamp,))
        self.stamp = stamp

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def write_table(path: str, type_name: str, pairs: Iterable[tuple[str, str]], stamp: str,
                mode: int) -> None:
    """Write a whole table to ``path`` atomically (temporary file, fsync, rename).

    A file already there keeps its mode and owner, as a Postfix rebuild
    keeps its .db file's; a new file gets ``mode``.  OSError when the
    directory cannot be written; NotCompiledTable when ``path`` exists
    and is not one of ours (never overwritten).
    """
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not is_ours(path):
        raise NotCompiledTable("not a Postbus table (a Postfix database?)")
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.fchmod(fd, (st.st_mode if st else mode) & 0o7777)
        if st is not None and os.geteuid() == 0:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.close(fd)
        fd = -1
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")  # one fsync below, before the rename
            db.execute("BEGIN")
            for statement in _SCHEMA:
                db.execute(statement)
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           (("type", type_name), ("stamp", stamp)))
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)",
                           ((_b(k), _b(v)) for k, v in pairs))
            db.execute("COMMIT")
        finally:
            db.close()
        with open(tmp, "rb") as fp:
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

