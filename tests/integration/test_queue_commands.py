"""postqueue -f, -i and -s carried out by real qmgr replicas, and the queue gauges
of two replicas, on a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postbus.queue import gauges
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, Recipient
from postbus.servers import ServerProcess
from tests.integration.qmgrs import Qmgrs, postbus, until, write_conf

pytestmark = pytest.mark.integration


@pytest.fixture
def conf(tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> Path:
    return write_conf(tmp_path, nats, redis, "fast_flush_domains = later.test\n")


@pytest.fixture
def qmgrs(conf: Path) -> Iterator[Qmgrs]:
    replicas = Qmgrs(conf)
    yield replicas
    replicas.stop()


async def queued(store: Bus, *recipients: str) -> list[str]:
    return [await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient(rcpt)]),
                                      b"Subject: t\r\n\r\nbody\r\n") for rcpt in recipients]


async def attempts(store: Bus, qid: str) -> int:
    """How many attempts a deferred message has had (0 while it is not deferred)."""
    got = await store.queue.get(qid)
    return got[0].attempts if got is not None and got[0].queue == "deferred" else 0


async def all_deferred(store: Bus, ids: list[str], tries: int = 1) -> bool:
    return all([await attempts(store, qid) == tries for qid in ids])


async def test_postqueue_i_tries_that_deferred_message_now(
    conf: Path, qmgrs: Qmgrs, store: Bus
) -> None:
    qmgrs.start(1)
    first, second = await queued(store, "x@later.test", "y@later.test")
    await until(lambda: all_deferred(store, [first, second]))
    got = await store.queue.get(first)
    assert got is not None and got[0].next_attempt > time.time() + 3000  # an hour away
    done = await asyncio.to_thread(postbus, conf, "postqueue", "-i", first)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    await until(lambda: all_deferred(store, [first], 2))
    assert await attempts(store, second) == 1


async def test_postqueue_f_tries_every_deferred_message_and_leaves_held_mail(
    conf: Path, qmgrs: Qmgrs, store: Bus
) -> None:
    qmgrs.start(2)
    ids = await queued(store, "a@later.test", "b@later.test", "c@other.test", "d@other.test")
    await until(lambda: all_deferred(store, ids))
    held = await asyncio.to_thread(postbus, conf, "postsuper", "-h", ids[3])
    assert "postsuper: Placed on hold: 1 message" in held.stderr
    done = await asyncio.to_thread(postbus, conf, "postqueue", "-f")
    assert (done.returncode, done.stderr) == (0, "")
    await until(lambda: all_deferred(store, ids[:3], 2))
    got = await store.queue.get(ids[3])
    assert got is not None and (got[0].queue, got[0].attempts) == ("hold", 1)


async def test_postqueue_s_flushes_one_site_and_only_fast_flush_domains(
    conf: Path, qmgrs: Qmgrs, store: Bus
) -> None:
    qmgrs.start(1)
    later, other = await queued(store, "x@later.test", "y@other.test")
    await until(lambda: all_deferred(store, [later, other]))
    done = await asyncio.to_thread(postbus, conf, "postqueue", "-s", "Later.Test")
    assert (done.returncode, done.stderr) == (0, "")
    await until(lambda: all_deferred(store, [later], 2))
    assert await attempts(store, other) == 1
    denied = await asyncio.to_thread(postbus, conf, "postqueue", "-s", "other.test")
    assert denied.returncode == 69
    assert denied.stderr == ('postqueue: fatal: Flush service is not configured for '
                             'destination "other.test"\n')


async def test_postqueue_says_what_postfix_says(
    conf: Path, qmgrs: Qmgrs, store: Bus
) -> None:
    down = await asyncio.to_thread(postbus, conf, "postqueue", "-f")  # no qmgr yet
    assert (down.returncode, down.stderr) == (
        69, "postqueue: fatal: Cannot flush mail queue - mail system is down\n")
    down = await asyncio.to_thread(postbus, conf, "postqueue", "-i", "ABCDEF12345")
    assert down.returncode == 69
    qmgrs.start(1)
    await until(lambda: asyncio.to_thread(
        lambda: postbus(conf, "postqueue", "-f").returncode == 0))
    bad = await asyncio.to_thread(postbus, conf, "postqueue", "-i", "../x")
    assert (bad.returncode, bad.stderr) == (64, 'postqueue: fatal: Invalid request: "../x"\n')
    nothing = await asyncio.to_thread(postbus, conf, "postqueue", "-i", "ABCDEF12345")
    assert (nothing.returncode, nothing.stderr) == (0, "")  # as flush(8): no such file is ok


async def test_gauges_of_two_replicas_follow_the_queue(
    conf: Path, qmgrs: Qmgrs, store: Bus
) -> None:
    """Both replicas show the same sizes, from counters both move; exactly one
    replica recounted the (empty) queue at start."""
    hour = gauges.slot()
    qmgrs.start(2)
    await until(lambda: asyncio.to_thread(lambda: "recounted the queue" in qmgrs.log()))
    ids = await queued(store, *(f"r{i}@later.test" for i in range(6)))
    await until(lambda: all_deferred(store, ids))
    held = await asyncio.to_thread(postbus, conf, "postsuper", "-h", ids[0], ids[1])
    assert "Placed on hold: 2 messages" in held.stderr
    deleted = await asyncio.to_thread(postbus, conf, "postsuper", "-d", ids[2], ids[0])
    assert "Deleted: 2 messages" in deleted.stderr
    want = {"incoming": 0.0, "active": 0.0, "deferred": 3.0, "hold": 1.0, "corrupt": 0.0}

    async def both() -> bool:
        return all([await asyncio.to_thread(qmgrs.scrape, i) == want for i in (0, 1)])

    await until(both)
    flushed = await asyncio.to_thread(postbus, conf, "postqueue", "-f")
    assert flushed.returncode == 0
    await until(lambda: all_deferred(store, ids[3:], 2))
    await until(both)  # through active and back: the counters still add up
    if gauges.slot() == hour:
        assert qmgrs.log().count("recounted the queue") == 1


async def counted(store: Bus, queue: str, count: int) -> bool:
    return await gauges.counter(store.js, queue) == count


async def test_a_recount_corrects_drift(conf: Path, qmgrs: Qmgrs, store: Bus) -> None:
    qmgrs.start(1)

    async def recounted() -> bool:  # the qmgr's first recount (counters are new) is done:
        return "recounted the queue" in qmgrs.log()  # it cannot race our deferrals

    await until(recounted)
    ids = await queued(store, "x@later.test", "y@later.test")
    await until(lambda: all_deferred(store, ids))
    # the qmgr moves the counter just after it writes the entry: wait for that too
    await until(lambda: counted(store, "deferred", 2))
    qmgrs.stop()  # its own gauge loop may recount too: the drift below must stay until ours
    await gauges.move(store.js, None, "hold")  # as if a writer died after its write
    await gauges.move(store.js, "deferred", None)
    assert await gauges.counter(store.js, "hold") == 1
    assert await gauges.counter(store.js, "deferred") == 1
    assert await gauges.recount(store.js) == {"deferred": 2, "hold": 0}
    assert await gauges.counter(store.js, "hold") == 0
    assert await gauges.counter(store.js, "deferred") == 2


async def test_counters_follow_entry_writes_and_removals(store: Bus) -> None:
    """QueueFile moves the counters itself: a write that changes queue, and a
    removal of mail it last saw deferred or held (as the qmgr removes held
    mail whose attempt delivered it)."""
    queue = store.queue
    first, second = [await queue.enqueue(QueueEntry("", "a@client.test", [Recipient(r)]),
                                         b"\r\nbody\r\n") for r in ("x@a.test", "y@b.test")]

    def to(name: str) -> Callable[[QueueEntry], bool]:
        return lambda entry: setattr(entry, "queue", name) is None

    await queue.modify(first, to("deferred"))
    await queue.modify(second, to("hold"))
    assert (await gauges.counter(store.js, "deferred"), await gauges.counter(store.js, "hold")) \
        == (1, 1)
    await queue.modify(first, to("active"))  # a retry begins
    await queue.modify(second, to("deferred"))  # released
    assert (await gauges.counter(store.js, "deferred"), await gauges.counter(store.js, "hold")) \
        == (1, 0)
    assert await queue.get(second) is not None  # last seen deferred
    assert await queue.remove(second) >= 2 and await queue.remove(first) >= 2
    assert (await gauges.counter(store.js, "deferred"), await gauges.counter(store.js, "hold")) \
        == (0, 0)
    assert await queue.remove(first) == 0  # gone already: nothing moves
    assert await gauges.counter(store.js, "deferred") == 0
