"""Many small JetStream writes made durable with one write to disk.

Under ``sync_interval: always`` every write nats-server stores costs an
fsync, about 0.4 ms of its CPU on our benchmark box whatever its size. Marks
that may wait a little (a message's "done" mark: only the trigger's
acknowledgement waits for it, never a client) are gathered for up to
:data:`WINDOW` seconds, or until :data:`MAX_GROUP` are waiting, and stored
as one atomic batch: one fsync for the group, each writer told once the
batch is on disk. With no window (a tool removing many messages at once),
a group is what arrived while the previous one was being written. Should
the batch fail, every writer in it gets the error (and retries through its
own bus policy): none is told "stored" unless it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os

from nats.js.errors import APIError

from postbus.bus.requests import WRONG_LAST_SEQUENCE, Requests

WINDOW = 0.03  # seconds the first write of a group waits for company
MAX_GROUP = 48  # writes per batch (below a consumer's 64 handlers in flight)

Item = tuple[str, bytes, dict[str, str]]
Unit = list[Item]  # writes that are stored together or not at all


class GroupCommit:
    """Writes to one stream, committed in groups (see the module docstring)."""

    def __init__(self, requests: Requests, stream: str, window: float = WINDOW) -> None:
        self.requests = requests
        self.stream = stream
        self.window = window
        self.waiting: list[tuple[Unit, asyncio.Future[list[int]]]] = []
        self.count = 0  # writes waiting
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._names = itertools.count()
        self._prefix = os.urandom(6).hex()

    async def write(self, subject: str, data: bytes, headers: dict[str, str]) -> int:
        """Returns the stream sequence once the write is stored (with its group);
        APIError if it was not."""
        return (await self.write_all([(subject, data, headers)]))[0]

    async def write_all(self, unit: Unit) -> list[int]:
        """Store these writes together, or none of them (a compare-and-set among
        them failed: APIError); their stream sequences, in order."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.waiting.append((unit, future))
        self.count += len(unit)
        if self.count >= MAX_GROUP:
            self.full.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._commit())
        return await future

    async def _commit(self) -> None:
        while self.waiting:
            if self.window and self.count < MAX_GROUP:
                self.full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.full.wait(), self.window)
            group = self._take()
            try:
                await self._store(group)
            except APIError as exc:
                if len(group) == 1 or exc.err_code not in WRONG_LAST_SEQUENCE:
                    _fail(group, exc)
                    continue
                for one in group:  # whose compare-and-set failed? each on its own
                    try:
                        await self._store([one])
                    except Exception as single:  # that writer hears of it
                        _fail([one], single)
            except Exception as exc:  # every writer hears of it
                _fail(group, exc)

    def _take(self) -> list[tuple[Unit, asyncio.Future[list[int]]]]:
        group: list[tuple[Unit, asyncio.Future[list[int]]]] = []
        taken = 0
        while self.waiting and (not group or taken + len(self.waiting[0][0]) <= MAX_GROUP):
            unit, future = self.waiting.pop(0)
            group.append((unit, future))
            taken += len(unit)
        self.count -= taken
        return group

    async def _store(self, group: list[tuple[Unit, asyncio.Future[list[int]]]]) -> None:
        items = [item for unit, _ in group for item in unit]
        ack = await self.requests.atomic_batch(items, self.stream,
                                               f"{self._prefix}{next(self._names)}")
        seq = ack.seq - len(items) + 1  # a batch is stored in one run of sequences
        for unit, future in group:
            if not future.done():
                future.set_result(list(range(seq, seq + len(unit))))
            seq += len(unit)


def _fail(group: list[tuple[Unit, asyncio.Future[list[int]]]], exc: Exception) -> None:
    for _, future in group:
        if not future.done():
            future.set_exception(exc)
