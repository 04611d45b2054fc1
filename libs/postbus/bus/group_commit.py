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

from postbus.bus.requests import Requests

WINDOW = 0.03  # seconds the first write of a group waits for company
MAX_GROUP = 48  # writes per batch (below a consumer's 64 handlers in flight)

Item = tuple[str, bytes, dict[str, str]]


class GroupCommit:
    """Writes to one stream, committed in groups (see the module docstring)."""

    def __init__(self, requests: Requests, stream: str, window: float = WINDOW) -> None:
        self.requests = requests
        self.stream = stream
        self.window = window
        self.waiting: list[tuple[Item, asyncio.Future[None]]] = []
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._names = itertools.count()
        self._prefix = os.urandom(6).hex()

    async def write(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Returns once the write is stored (with its group); APIError if it was not."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(((subject, data, headers), future))
        if len(self.waiting) >= MAX_GROUP:
            self.full.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._commit())
        await future

    async def _commit(self) -> None:
        while self.waiting:
            if self.window and len(self.waiting) < MAX_GROUP:
                self.full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.full.wait(), self.window)
            group, self.waiting = self.waiting[:MAX_GROUP], self.waiting[MAX_GROUP:]
            try:
                await self.requests.atomic_batch(
                    [item for item, _ in group], self.stream,
                    f"{self._prefix}{next(self._names)}")
            except Exception as exc:  # every writer hears of it
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in group:
                if not future.done():
                    future.set_result(None)
