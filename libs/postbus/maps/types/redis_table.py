"""Tables kept in Redis: the indexed types and ``redis:`` (≈ dict_db.c, dict_lmdb.c, dict_cdb.c).

* ``hash:/etc/postbus/virtual`` (also ``btree:``, ``lmdb:``, ``cdb:``,
  ``dbm:``, ``sdbm:``) is the table ``postbus postmap`` built from that
  source file (see :mod:`postbus.maps.store` for the key scheme).  When
  the compiled file ``virtual.db`` is on this process's disk, Redis's copy
  follows it (:mod:`postbus.maps.sync`: loaded at the first lookup, when
  the file changes, or when Redis lost the table).  A table never built is
  a table error, as in Postfix when the .db file is missing ("open
  database /etc/postbus/virtual.db: No such file or directory"), never
  "not found".
* ``redis:name`` is a table kept directly in Redis (``postbus postmap -i
  redis:name``, maps-api, or plain ``HSET postbus:map:redis:name key value``
  with the key in lower case).  A name that holds nothing is an empty table.

Both are fixed-key tables: the query key is case-folded.  Answers, found and
not found, are cached per process (:mod:`postbus.maps.cache`) until the TTL
ends or a change event names the table.  Redis unreachable raises
TableRetry.
"""

from __future__ import annotations

import os

from postbus.maps import context, store, sync
from postbus.maps.cache import Miss
from postbus.maps.compiled import DB_SUFFIX, db_path
from postbus.maps.table import (
    Table,
    TableConfigError,
    TableFactory,
    TableRetry,
    fold_key,
    log,
    register_type,
)
from postbus.maps.types.hashfile import INDEXED_TYPES

__all__ = ["DB_SUFFIX", "RedisTable", "database_name", "table_id"]

def table_id(type_name: str, name: str) -> str:
    """The canonical ``type:name`` of a stored table (absolute path for indexed types)."""
    if type_name in INDEXED_TYPES:
        name = os.path.abspath(name)
    return f"{type_name}:{name}"


def database_name(type_name: str, name: str) -> str:
    """The file Postfix would open, named as given: ``/etc/x.db`` for ``hash:/etc/x``."""
    if type_name in INDEXED_TYPES:
        return db_path(type_name, name)
    return f"{type_name}:{name}"


class RedisTable(Table):
    """A fixed-key table stored as one Redis hash."""

    fixed = True

    def __init__(self, spec: str, type_name: str, name: str, *, fold: bool = True) -> None:
        super().__init__(spec)
        if not name:
            raise TableConfigError(f'need "{type_name}:name" instead of "{spec}"')
        self.type_name = type_name
        self.name = name
        self.id = table_id(type_name, name)
        self.fold = fold
        #: Indexed tables must have been built; a redis: table may be empty.
        self.must_exist = type_name in INDEXED_TYPES
        #: The compiled file whose builds Redis's copy follows (indexed types).
        self.db_path = db_path(type_name, self.id.partition(":")[2]) if self.must_exist else ""

    def missing_reason(self) -> str:
        database = database_name(self.type_name, self.name)
        return f"open database {database}: No such file or directory"

    async def lookup(self, key: str) -> str | None:
        if self.fold:
            key = fold_key(key)
        try:
            if self.must_exist:  # first, so that a rebuilt file also drops cached answers
                await sync.refresh(self.id, self.db_path, self.type_name)
            cache = context.get_context().cache
            value = cache.get(self.id, key)
            if not isinstance(value, Miss):
                return value
            generation = cache.generation(self.id)
            loaded, found = await store.get(context.redis_client(), self.id, key)
            if not loaded and self.must_exist and await sync.refresh(
                    self.id, self.db_path, self.type_name, force=True):
                generation = cache.generation(self.id)
                loaded, found = await store.get(context.redis_client(), self.id, key)
        except TableRetry as exc:
            log.warning('%s lookup error for "%s": %s', self.spec, key, exc)
            raise
        if not loaded and self.must_exist:
            reason = self.missing_reason()
            log.warning('%s lookup error for "%s": %s', self.spec, key, reason)
            raise TableRetry(f"{self.spec}: {reason}")
        cache.put(self.id, key, found, generation)
        return found


def _factory(type_name: str) -> TableFactory:
    return lambda spec, name: RedisTable(spec, type_name, name)


for _name in (*INDEXED_TYPES, "redis"):
    register_type(_name, _factory(_name))
