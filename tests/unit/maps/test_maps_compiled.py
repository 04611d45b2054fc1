"""The compiled table file (access.db beside access) and build stamps, without any server."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from postbus.maps import compiled
from postbus.maps.stamp import new_stamp, newer, stamp_time


def test_write_read_edit(tmp_path: Path) -> None:
    path = str(tmp_path / "access.db")
    compiled.write_table(path, "hash", [("a", "1"), ("b\udcff", "bytes \udcfe")], "10-x", 0o640)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert compiled.is_ours(path)
    with compiled.CompiledTable(path, "hash") as db:
        assert db.stamp == "10-x"
        assert db.get_many(["a", "b\udcff", "c"]) == ["1", "bytes \udcfe", None]
        assert list(db.items()) == [("a", "1"), ("b\udcff", "bytes \udcfe")]
        assert len(db) == 2
    with compiled.CompiledTable(path, "hash", writable=True) as db:
        db.update([("c", "3"), ("a", "9")], "11-y")
        assert db.delete(["zz"], "12-z") == [False]
        assert db.stamp == "11-y"  # nothing deleted: the stamp stays
        assert db.delete(["b\udcff", "zz"], "13-w") == [True, False]
    with compiled.CompiledTable(path, "hash") as db:
        assert (db.stamp, list(db.items())) == ("13-w", [("a", "9"), ("c", "3")])


def test_rebuild_is_atomic_and_keeps_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    compiled.write_table(path, "btree", [("a", "1")], "1-a", 0o644)
    os.chmod(path, 0o600)
    reader = compiled.CompiledTable(path, "btree")
    compiled.write_table(path, "btree", [("b", "2")], "2-b", 0o644)
    assert list(reader.items()) == [("a", "1")]  # an open reader keeps the old table
    reader.close()
    assert os.stat(path).st_mode & 0o777 == 0o600
    with compiled.CompiledTable(path, "btree") as db:
        assert list(db.items()) == [("b", "2")]
    assert sorted(os.listdir(tmp_path)) == ["t.db"]  # no temporary file left


def test_foreign_files_are_neither_read_nor_overwritten(tmp_path: Path) -> None:
    bdb = tmp_path / "access.db"
    bdb.write_bytes(b"\0\0\0\0\1\0\0\0" + b"\0" * 4088)
    with pytest.raises(compiled.NotCompiledTable, match="not a Postbus table"):
        compiled.CompiledTable(str(bdb), "hash")
    with pytest.raises(compiled.NotCompiledTable):
        compiled.write_table(str(bdb), "hash", [("a", "1")], "1-a", 0o644)
    assert bdb.read_bytes()[:8] == b"\0\0\0\0\1\0\0\0"
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE x (y)")
    con.commit()
    con.close()
    assert not compiled.is_ours(str(other))  # SQLite, but not one of ours
    compiled.write_table(str(tmp_path / "t.db"), "hash", [], "1-a", 0o644)
    with pytest.raises(compiled.NotCompiledTable, match="holds a hash: table, not btree:"):
        compiled.CompiledTable(str(tmp_path / "t.db"), "btree")
    os.mkfifo(tmp_path / "fifo.db")
    assert not compiled.is_ours(str(tmp_path / "fifo.db"))  # never blocks on a FIFO


def test_names_and_idents(tmp_path: Path) -> None:
    assert compiled.db_path("hash", "/etc/postbus/access") == "/etc/postbus/access.db"
    assert compiled.db_path("lmdb", "rel/x") == "rel/x.lmdb"
    assert compiled.db_path("dbm", "/x") == "/x.pag"
    path = str(tmp_path / "t.db")
    assert compiled.file_ident(path) is None
    compiled.write_table(path, "hash", [], "1-a", 0o644)
    first = compiled.file_ident(path)
    compiled.write_table(path, "hash", [], "2-b", 0o644)
    assert first is not None and compiled.file_ident(path) not in (None, first)


def test_stamps_order_builds() -> None:
    a, b = new_stamp(), new_stamp()
    assert stamp_time(b) >= stamp_time(a) > 0
    assert newer("20-x", "10-y") and not newer("10-y", "20-x")
    assert not newer("20-x", "20-x")
    assert newer("20-x", None) and not newer(None, "20-x")
    assert newer("20-x", "1")  # a table loaded before stamps existed is older than any build
    assert stamp_time("garbage") == 0
