"""The lookup cache: LRU bound, TTL, negative answers, per-table invalidation."""

from __future__ import annotations

import time

import pytest

from postbus.maps.cache import MISS, LookupCache


def test_positive_and_negative_answers_are_cached() -> None:
    cache = LookupCache(size=10, ttl=60)
    assert cache.get("hash:/t", "a") is MISS
    cache.put("hash:/t", "a", "value")
    cache.put("hash:/t", "b", None)
    assert cache.get("hash:/t", "a") == "value"
    assert cache.get("hash:/t", "b") is None
    assert cache.get("hash:/other", "a") is MISS


def test_lru_evicts_least_recently_used() -> None:
    cache = LookupCache(size=2, ttl=60)
    cache.put("t", "a", "1")
    cache.put("t", "b", "2")
    assert cache.get("t", "a") == "1"  # a is now the most recent
    cache.put("t", "c", "3")
    assert cache.get("t", "b") is MISS
    assert cache.get("t", "a") == "1"
    assert cache.get("t", "c") == "3"
    assert len(cache) == 2


def test_ttl_expires_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = LookupCache(size=10, ttl=5)
    cache.put("t", "a", "1")
    now[0] += 4.9
    assert cache.get("t", "a") == "1"
    now[0] += 0.2
    assert cache.get("t", "a") is MISS


def test_invalidate_drops_one_table_only() -> None:
    cache = LookupCache(size=10, ttl=60)
    cache.put("hash:/a", "k", "1")
    cache.put("hash:/b", "k", "2")
    cache.invalidate("hash:/a")
    assert cache.get("hash:/a", "k") is MISS
    assert cache.get("hash:/b", "k") == "2"


def test_answer_racing_an_invalidation_is_not_cached() -> None:
    cache = LookupCache(size=10, ttl=60)
    generation = cache.generation("t")
    cache.invalidate("t")  # the table changed while the lookup was in flight
    cache.put("t", "k", "old", generation)
    assert cache.get("t", "k") is MISS


def test_disabled_cache_stores_nothing() -> None:
    for cache in (LookupCache(size=0, ttl=60), LookupCache(size=10, ttl=0)):
        cache.put("t", "k", "v")
        assert cache.get("t", "k") is MISS
