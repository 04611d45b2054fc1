"""Key/value source files: the one parser, and ``texthash:`` (≈ dict_thash.c, postmap.c).

:func:`iter_kv_source` is the only reader of ``key whitespace value`` text:
``texthash:`` parses its file with it at lookup time, and ``postbus
postmap`` parses the source of ``hash:``/``btree:``/``lmdb:``/``cdb:``/
``dbm:`` tables with it before compiling the pairs into the file beside
the source and Redis (see :mod:`postbus.maps.compiled`, and
:mod:`postbus.maps.types.redis_table` for those types' lookups).
"""

from __future__ import annotations

from collections.abc import Iterator

from postbus.maps.table import fold_key, log, register_type
from postbus.maps.types._syntax import SPACE, FileBackedTable, logical_lines

#: Types that postmap compiles (maps/compiled.py); served from Redis (types/redis_table.py).
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


def iter_kv_source(text: str, path: str, *, postmap: bool = False
                   ) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line_number, key, value)`` of a postmap source text, keys as written.

    Malformed lines get Postfix's warning (``path, line N: ...``) and are
    skipped.  ``postmap`` selects the wording of postmap.c, which differs
    from dict_thash.c's in one message; duplicates are the caller's
    business (postmap warns about them with the database name).
    """
    for lineno, line in logical_lines(text, path):
        parts = split_kv_line(line)
        if parts is None:
            log.warning("%s, line %d: unbalanced '\"' in '%s' -- ignoring this line",
                        path, lineno, line)
            continue
        key, value = parts
        if not key or not value:
            log.warning("%s, line %d: expected format: key whitespace value%s",
                        path, lineno, "" if postmap else " -- ignoring this line")
            continue
        if key.endswith(":"):
            log.warning('%s, line %d: record is in "key: value" format;'
                        " is this an alias file?", path, lineno)
        yield lineno, key, value


def parse_kv_source(text: str, path: str, fold: bool = True) -> dict[str, str]:
    """Parse a source file into a dict, as ``texthash:`` does.

    For a duplicate key Postfix warns (naming the key as written) and keeps
    the first value.  Keys are case-folded when ``fold`` (the default for
    fixed tables).
    """
    table: dict[str, str] = {}
    for lineno, key, value in iter_kv_source(text, path):
        folded = fold_key(key) if fold else key
        if folded in table:
            log.warning('%s, line %d: duplicate entry: "%s"', path, lineno, key)
            continue
        table[folded] = value
    return table


class KeyValueFileTable(FileBackedTable[dict[str, str]]):
    """``texthash:``: a fixed-key table read from its source file, re-read when it changes."""

    fixed = True

    def __init__(self, spec: str, name: str, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(spec, name)

    def parse(self, text: str, path: str) -> dict[str, str]:
        return parse_kv_source(text, path)

    async def lookup(self, key: str) -> str | None:
        return self.current().get(fold_key(key))


register_type("texthash", lambda spec, name: KeyValueFileTable(spec, name, "texthash"))
