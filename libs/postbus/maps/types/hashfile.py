"""Key/value tables: ``texthash:`` and the indexed types (≈ dict_thash.c, postmap.c).

``hash:``, ``btree:``, ``lmdb:``, ``cdb:`` and ``dbm:`` name a source file
that Postfix compiles with postmap.  For now we read that *source* file
directly, like ``texthash:``, and re-read it when it changes; a later step
stores the parsed pairs in Redis after ``postbus postmap``, reusing
:func:`parse_kv_source` so both paths agree on the syntax.
"""

from __future__ import annotations

from postbus.maps.table import TableFactory, fold_key, log, register_type
from postbus.maps.types._syntax import SPACE, FileBackedTable, logical_lines

INDEXED_TYPES = ("hash", "btree", "lmdb", "cdb", "dbm", "sdbm")


def split_kv_line(line: str) -> tuple[str, str] | None:
    """Split ``key whitespace value``; whitespace inside "quotes" stays in the key.

    Returns None when the quotes are unbalanced.  The key keeps its quotes
    and backslashes, as postmap stores it.
    """
    i, quoted = 0, False
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 1
            if i >= len(line):
                break
        elif ch in SPACE:
            if not quoted:
                break
        elif ch == '"':
            quoted = not quoted
        i += 1
    if quoted:
        return None
    return line[:i], line[i + 1 :].strip(SPACE)


def parse_kv_source(text: str, path: str, fold: bool = True) -> dict[str, str]:
    """Parse a postmap source file into a dict, Postfix-style.

    Malformed lines get Postfix's warning (``path, line N: ...``) and are
    skipped; for a duplicate key Postfix warns and keeps the first value.
    Keys are case-folded when ``fold`` (the default for fixed tables).
    """
    table: dict[str, str] = {}
    for lineno, line in logical_lines(text, path):
        parts = split_kv_line(line)
        if parts is None:
            log.warning("%s, line %d: unbalanced '\"' in '%s' -- ignoring this line",
                        path, lineno, line)
            continue
        key, value = parts
        if not key or not value:
            log.warning("%s, line %d: expected format: key whitespace value"
                        " -- ignoring this line", path, lineno)
            continue
        if key.endswith(":"):
            log.warning('%s, line %d: record is in "key: value" format;'
                        " is this an alias file?", path, lineno)
        if fold:
            key = fold_key(key)
        if key in table:
            log.warning('%s, line %d: duplicate entry: "%s"', path, lineno, key)
            continue
        table[key] = value
    return table


class KeyValueFileTable(FileBackedTable[dict[str, str]]):
    """A fixed-key table read from a ``key value`` source file."""

    fixed = True

    def __init__(self, spec: str, name: str, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(spec, name)

    def parse(self, text: str, path: str) -> dict[str, str]:
        return parse_kv_source(text, path)

    async def lookup(self, key: str) -> str | None:
        return self.current().get(fold_key(key))


def _factory(type_name: str) -> TableFactory:
    return lambda spec, name: KeyValueFileTable(spec, name, type_name)


for _name in ("texthash", *INDEXED_TYPES):
    register_type(_name, _factory(_name))
