"""A bounded LRU cache with TTL for table lookups, positive and negative.

Postfix daemons read an indexed table file directly and restart when the
file changes.  Our indexed tables live in Redis, one network round trip
away, so each process keeps recent answers here: found values *and* "not
found" (``None``), since most lookups in access and virtual maps miss.

Two things bound the staleness of an entry:

* the TTL (``cache_ttl`` seconds, a safety net when a change event is lost);
* change events: ``postbus postmap``, maps-api and a role that loaded a
  compiled file publish the table's spec on
  :data:`postbus.bus.subjects.MAPS_CHANGED_SUBJECT`, and
  :func:`postbus.maps.context.watch_changes` calls :meth:`LookupCache.invalidate`;
  a process also drops a table's answers when it sees its compiled file
  change (:mod:`postbus.maps.sync`).

Invalidating a table is O(1): each table has a generation number that is
part of every cache key, so bumping it makes the table's old entries
unreachable; they fall out of the LRU order as new entries arrive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Final

__all__ = ["MISS", "LookupCache", "Miss"]


class Miss:
    """Sentinel for "not in the cache" (``None`` is a cached "not found")."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS: Final = Miss()

_Key = tuple[str, int, str]


class LookupCache:
    """``(table, key) -> value | None`` with LRU eviction beyond ``size`` and a TTL."""

    def __init__(self, size: int = 100_000, ttl: float = 30.0) -> None:
        self.size = max(0, size)
        self.ttl = ttl
        self._data: OrderedDict[_Key, tuple[float, str | None]] = OrderedDict()
        self._gen: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl > 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, table: str, key: str) -> str | Miss | None:
        """The cached answer (a value, or None for "not found"), or :data:`MISS`."""
        ckey = (table, self._gen.get(table, 0), key)
        item = self._data.get(ckey)
        if item is None:
            self.misses += 1
            return MISS
        if item[0] < time.monotonic():
            del self._data[ckey]
            self.misses += 1
            return MISS
        self._data.move_to_end(ckey)
        self.hits += 1
        return item[1]

    def generation(self, table: str) -> int:
        """The table's generation; pass it to :meth:`put` for an answer fetched meanwhile."""
        return self._gen.get(table, 0)

    def put(self, table: str, key: str, value: str | None, generation: int | None = None) -> None:
        """Remember an answer (None: not found); evict the least recently used beyond size.

        With ``generation`` (read before the backend was asked) an answer that
        raced with an invalidation is dropped instead of cached as current.
        """
        if not self.enabled:
            return
        current = self._gen.get(table, 0)
        if generation is not None and generation != current:
            return
        ckey = (table, current, key)
        self._data[ckey] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(ckey)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def invalidate(self, table: str) -> None:
        """Forget every answer of one table (its ``type:name`` as the change event names it)."""
        self._gen[table] = self._gen.get(table, 0) + 1

    def clear(self) -> None:
        self._data.clear()
        self._gen.clear()
