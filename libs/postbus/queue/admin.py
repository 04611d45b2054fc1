"""Queue administration shared by postqueue and postsuper (≈ showq(8) + postsuper(1)).

Both tools talk to JetStream directly, so they work from any host that
reaches the bus, for every qmgr replica at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nats.js import JetStreamContext

from postbus.bus.jetstream import connect, ensure_streams
from postbus.config.loader import Config
from postbus.queue import corrupt
from postbus.queue.entry import QueueEntry
from postbus.queue.file import QueueFile
from postbus.queue.work import WorkBus


@dataclass
class Bus:
    """What the queue tools work on: the queue file and the work bus."""

    queue: QueueFile
    work: WorkBus

    @property
    def js(self) -> JetStreamContext:
        return self.queue.js


@asynccontextmanager
async def open_queue(cfg: Config, name: str) -> AsyncIterator[Bus]:
    closing = False
    nc = await connect(
        cfg.get("postbus_nats_url"), name, connect_timeout=5, closing=lambda: closing
    )
    try:
        await ensure_streams(nc.jetstream(), cfg.int("postbus_stream_replicas"))
        js = nc.jetstream()
        bus = Bus(QueueFile(nc, js), WorkBus(nc, js))
        yield bus
        await bus.work.drain()
    finally:
        closing = True
        await nc.close()


async def select(store: QueueFile, ids: list[str], queues: set[str] | None) -> list[str]:
    """Queue IDs named on the command line; ``ALL`` means every message (in ``queues``)."""
    if "ALL" in ids:
        return [e.queue_id async for e in store.entries() if not queues or e.queue in queues]
    return ids


async def select_corrupt(store: QueueFile, ids: list[str], queues: set[str] | None) -> list[str]:
    """IDs to delete from the corrupt queue: those named (unless only other
    queues are named), or every one for ``ALL corrupt``."""
    if queues is not None and "corrupt" not in queues:
        return []
    if "ALL" in ids:
        if queues is None:
            return []  # Postfix's default queues do not include corrupt
        return [m.record_id for m in await corrupt.corrupt_messages(store.js)]
    return ids


async def change_each(
    store: QueueFile, ids: list[str], change: Callable[[QueueEntry], bool]
) -> list[QueueEntry]:
    """Apply ``change`` to each entry; returns the entries it changed."""
    changed: list[QueueEntry] = []
    for queue_id in ids:
        done = False

        def apply(entry: QueueEntry) -> bool:
            nonlocal done
            done = change(entry)
            return done

        entry = await store.modify(queue_id, apply)
        if entry is not None and done:
            changed.append(entry)
    return changed


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
