"""Tables in Redis: hash:/btree:/lmdb:/cdb: after postmap, redis:, the cache, change events.

Every test runs a real redis-server (and nats-server where events matter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from postbus.maps import context, store
from postbus.maps.table import TableRetry, open_table
from postbus.servers import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture
async def maps(redis: ServerProcess) -> AsyncIterator[ServerProcess]:
    context.configure(redis.url)
    yield redis
    await context.aclose()


@pytest.mark.parametrize("typ", ["hash", "btree", "lmdb", "cdb", "dbm"])
async def test_loaded_table_is_found_case_folded(maps: ServerProcess, typ: str) -> None:
    await store.replace_table(context.redis_client(), f"{typ}:/etc/postbus/m",
                              [("example.com", "OK"), ("user@example.org", "REJECT")])
    table = open_table(f"{typ}:/etc/postbus/m")
    assert await table.lookup("EXAMPLE.com") == "OK"
    assert await table.lookup("User@Example.ORG") == "REJECT"
    assert await table.lookup("other.com") is None


async def test_relative_name_is_the_absolute_table(maps: ServerProcess, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    await store.replace_table(context.redis_client(), f"hash:{tmp_path}/rel", [("a", "1")])
    assert await open_table("hash:rel").lookup("a") == "1"


async def test_never_built_table_is_retry_with_postfix_text(
        maps: ServerProcess, caplog: pytest.LogCaptureFixture) -> None:
    table = open_table("hash:/etc/postbus/never")
    with caplog.at_level(logging.WARNING), pytest.raises(TableRetry) as err:
        await table.lookup("key")
    assert "open database /etc/postbus/never.db: No such file or directory" in str(err.value)
    assert any("never.db: No such file or directory" in m for m in caplog.messages)
    assert "open database /etc/postbus/never.lmdb" in str(
        await _retry_text(open_table("lmdb:/etc/postbus/never")))


async def _retry_text(table: object) -> str:
    with pytest.raises(TableRetry) as err:
        await table.lookup("x")  # type: ignore[attr-defined]
    return str(err.value)


async def test_empty_table_is_loaded_not_missing(maps: ServerProcess) -> None:
    await store.replace_table(context.redis_client(), "hash:/etc/postbus/empty", [])
    assert await open_table("hash:/etc/postbus/empty").lookup("x") is None


async def test_redis_type_is_kept_directly_in_redis(maps: ServerProcess) -> None:
    table = open_table("redis:senders")
    assert await table.lookup("anyone") is None  # an empty redis: table, not an error
    r = context.redis_client()
    await r.hset("postbus:map:redis:senders", "joe@example.com", "OK")
    await context.publish_change("redis:senders")
    assert await table.lookup("Joe@Example.COM") == "OK"


async def test_redis_down_is_retry(redis: ServerProcess) -> None:
    context.configure(redis.url)
    try:
        await store.replace_table(context.redis_client(), "hash:/t", [("a", "1")])
        context.get_context().cache.clear()
        redis.stop()
        with pytest.raises(TableRetry):
            await open_table("hash:/t").lookup("b")
        with pytest.raises(TableRetry):
            await open_table("redis:x").lookup("b")
    finally:
        await context.aclose()


async def test_cached_answers_survive_until_invalidated(maps: ServerProcess) -> None:
    r = context.redis_client()
    await store.replace_table(r, "hash:/t", [("a", "1")])
    table = open_table("hash:/t")
    assert await table.lookup("a") == "1"
    assert await table.lookup("b") is None  # negative answers are cached too
    await r.hset(store.data_key("hash:/t"), mapping={b"a": b"2", b"b": b"3"})
    assert (await table.lookup("a"), await table.lookup("b")) == ("1", None)
    context.get_context().cache.invalidate("hash:/t")
    assert (await table.lookup("a"), await table.lookup("b")) == ("2", "3")


async def test_change_event_invalidates_other_process_cache(
        maps: ServerProcess, nats: ServerProcess) -> None:
    watcher = await _connect(nats)
    publisher = await _connect(nats)
    try:
        sub = await context.watch_changes(watcher)
        await watcher.flush()
        r = context.redis_client()
        await store.replace_table(r, "hash:/t", [("a", "old")])
        table = open_table("hash:/t")
        assert await table.lookup("a") == "old"
        await store.replace_table(r, "hash:/t", [("a", "new")])
        assert await table.lookup("a") == "old"  # still cached: no event yet
        # Another process publishes (publish_change's own invalidation is local: avoid it).
        from postbus.bus.subjects import MAPS_CHANGED_SUBJECT
        await publisher.publish(MAPS_CHANGED_SUBJECT, b"hash:/t")
        await publisher.flush()
        for _ in range(100):
            if await table.lookup("a") == "new":
                break
            await asyncio.sleep(0.02)
        assert await table.lookup("a") == "new"
        await sub.unsubscribe()
    finally:
        await watcher.close()
        await publisher.close()


async def _connect(server: ServerProcess) -> nats.NATS:
    return await nats.connect(server.url)


async def test_atomic_replace_reader_never_sees_half_a_table(maps: ServerProcess) -> None:
    """A reader looping during reloads always finds keys present in both versions."""
    context.configure(maps.url, cache_size=0)  # every lookup goes to Redis
    r = context.redis_client()
    common = [(f"key{i}", f"v{i}") for i in range(20_000)]
    await store.replace_table(r, "hash:/big", common)
    table = open_table("hash:/big")
    stop = asyncio.Event()
    misses: list[str] = []
    reads = 0

    async def reader() -> None:
        nonlocal reads
        probe = ["key0", "key9999", "key19999", "key12345"]
        while not stop.is_set():
            for key in probe:
                if await table.lookup(key) is None:
                    misses.append(key)
                reads += 1

    task = asyncio.create_task(reader())
    versions = []
    for n in range(5):
        extra = [(f"new{n}-{i}", "x") for i in range(2000)]
        versions.append(await store.replace_table(r, "hash:/big", common[::-1] + extra))
    stop.set()
    await task
    assert misses == []
    assert reads > 20
    assert versions == sorted(versions) and versions[-1] == versions[0] + 4
    assert await store.table_version(r, "hash:/big") == versions[-1]
    assert not [k async for k in r.scan_iter(match="postbus:maptmp:*")]


async def test_update_delete_dump_and_list(maps: ServerProcess) -> None:
    r = context.redis_client()
    await store.replace_table(r, "hash:/u", [("a", "1")])
    version, dups = await store.update_table(r, "hash:/u", [("a", "9"), ("b", "2")])
    assert dups == ["a"]
    _, dups = await store.update_table(r, "hash:/u", [("a", "9")], mode="replace")
    assert dups == []
    assert sorted([kv async for kv in store.dump_table(r, "hash:/u")]) == [("a", "9"), ("b", "2")]
    _, found = await store.delete_keys(r, "hash:/u", ["a", "zz"])
    assert found == [True, False]
    assert "hash:/u" in await store.list_tables(r)
    await store.drop_table(r, "hash:/u")
    assert not await store.is_loaded(r, "hash:/u")
    assert version > 1
