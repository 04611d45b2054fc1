"""Queue administration shared by postqueue, postsuper and the qmgr's queue
commands (≈ showq(8) + postsuper(1)).

The tools talk to JetStream directly, so they work from any host that
reaches the bus, for every qmgr replica at once. Whatever they go through
is streamed (:mod:`postbus.queue.listing`) and changed a bounded number of
messages at a time, so ``ALL`` means all of a million messages without
holding them in memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from postbus.bus.jetstream import connect, ensure_streams
from postbus.config.loader import Config
from postbus.queue import corrupt
from postbus.queue.entry import QueueEntry
from postbus.queue.file import QueueConflict, QueueFile
from postbus.queue.listing import Taken, taken
from postbus.queue.work import WorkBus

PARALLEL = 64  # messages changed at once
CONNECT_DEADLINE = 5.0  # seconds a tool tries to reach NATS before it gives up
_T = TypeVar("_T")


@dataclass
class Bus:
    """What the queue tools work on: the queue file and the work bus."""

    queue: QueueFile
    work: WorkBus

    @property
    def js(self) -> JetStreamContext:
        return self.queue.js


async def reach(cfg: Config, name: str, closing: Callable[[], bool]) -> NATS:
    """Connect a command-line tool: reconnects once connected (a NATS restart
    during a long postsuper), but TimeoutError when NATS cannot be reached at
    all within CONNECT_DEADLINE (the mail system is down)."""
    return await asyncio.wait_for(
        connect(cfg.get("postbus_nats_url"), name, connect_timeout=2, closing=closing),
        CONNECT_DEADLINE,
    )


@asynccontextmanager
async def open_queue(cfg: Config, name: str) -> AsyncIterator[Bus]:
    closing = False
    nc = await reach(cfg, name, lambda: closing)
    try:
        await ensure_streams(nc.jetstream(), cfg.int("postbus_stream_replicas"))
        js = nc.jetstream()
        bus = Bus(QueueFile(nc, js, mark_window=0), WorkBus(nc, js))  # bulk: no waiting
        yield bus
        await bus.work.drain()
    finally:
        closing = True
        await nc.close()


@dataclass
class Target:
    """A message to act on: listed (entry known) or named (to be read)."""

    queue_id: str
    entry: QueueEntry | None = None
    revision: int = 0


async def targets(store: QueueFile, ids: Iterable[str]) -> AsyncIterator[Target]:
    """The messages named on the command line; ``ALL`` means every message, streamed."""
    names = list(dict.fromkeys(ids))
    if "ALL" in names:
        async for entry, revision in store.listing():
            yield Target(entry.queue_id, entry, revision)
        return
    for queue_id in names:
        yield Target(queue_id)


async def load(store: QueueFile, target: Target, now_taken: Taken) -> bool:
    """Read a named target's entry (False when there is no such message). A first
    attempt's entry, never written, is shown ``active`` once the qmgr took it."""
    if target.entry is not None:
        return True
    got = await store.get(target.queue_id)
    if got is None:
        return False
    target.entry, target.revision = got
    if target.revision == 0 and target.entry.queue == "incoming" \
            and now_taken.active(target.entry.holder):
        target.entry.queue = "active"
    return True


async def named_taken(store: QueueFile, ids: Iterable[str]) -> Taken:
    """What load() needs to tell incoming from active (nothing when listing ALL)."""
    return Taken() if "ALL" in ids else await taken(store.js)


async def each(
    items: AsyncIterator[_T], work: Callable[[_T], Coroutine[Any, Any, None]],
    parallel: int = PARALLEL,
) -> None:
    """``work`` on every item, at most ``parallel`` at once, in the order they come."""
    running: set[asyncio.Task[None]] = set()
    try:
        async for item in items:
            if len(running) >= parallel:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.create_task(work(item)))
        if running:
            await asyncio.gather(*running)
            running = set()
    finally:
        for task in running:
            task.cancel()


async def change(
    store: QueueFile, target: Target, how: Callable[[QueueEntry], bool]
) -> QueueEntry | None:
    """Apply ``how`` to a loaded target: one compare-and-set at the revision it was
    read at, read again when someone was faster; the entry, when ``how`` changed it."""
    assert target.entry is not None
    entry, was = target.entry, target.entry.queue
    if not how(entry):
        return None
    try:
        await store.update(entry, target.revision, was=was)
        return entry
    except QueueConflict:
        pass
    done = False

    def apply(fresh: QueueEntry) -> bool:
        nonlocal done
        done = how(fresh)
        return done

    fresh = await store.modify(target.queue_id, apply)
    return fresh if fresh is not None and done else None


async def select_corrupt(
    js: JetStreamContext, ids: list[str], queues: set[str] | None
) -> list[str]:
    """IDs to delete from the corrupt queue: every one for ``ALL corrupt``
    (Postfix's default queues do not include corrupt)."""
    if queues is None or "corrupt" not in queues or "ALL" not in ids:
        return []
    return [m.record_id for m in await corrupt.corrupt_messages(js)]


def release(entry: QueueEntry) -> bool:
    if entry.queue != "hold":
        return False
    entry.queue = "deferred"
    entry.next_attempt = time.time()
    return True


def hold(entry: QueueEntry) -> bool:
    if entry.queue == "hold":
        return False
    entry.queue = "hold"
    return True


def requeue(entry: QueueEntry) -> bool:
    """Forget routing decisions so the next attempt resolves every recipient again.
    (A message in flight is left alone: its attempt routes afresh anyway.)"""
    if entry.queue not in ("deferred", "hold"):
        return False
    for rcpt in entry.recipients:
        if rcpt.state == "deferred":
            rcpt.state = "pending"
    if entry.queue != "hold":
        entry.queue = "deferred"
    entry.next_attempt = time.time()
    return True


def flush(entry: QueueEntry) -> bool:
    if entry.queue != "deferred":
        return False
    entry.next_attempt = time.time()
    return True
