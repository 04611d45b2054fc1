"""Idle sessions kept for the next job to the same next hop (≈ smtp_reuse.c + scache(8)).

Postfix keeps a delivered-to session open for ``smtp_connection_cache_time_limit``
so the next message to that destination skips DNS, TCP, greeting, EHLO and
TLS. Here each process keeps its own idle sessions, several per next hop
(one per concurrent delivery), and closes them when idle too long, too
old (``smtp_connection_reuse_time_limit``) or used too often
(``smtp_connection_reuse_count_limit``, 0 = no limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from delivery_smtp.session import Chat


class SessionCache:
    def __init__(
        self, *, idle_limit: float, time_limit: float, count_limit: int, quit_timeout: float
    ) -> None:
        self.idle_limit = idle_limit
        self.time_limit = time_limit
        self.count_limit = count_limit
        self.quit_timeout = quit_timeout
        self.idle: dict[str, list[tuple[float, Chat]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, key: str) -> Chat | None:
        """The most recently parked live session for ``key``, or None."""
        parked = self.idle.get(key)
        now = time.monotonic()
        while parked:
            since, chat = parked.pop()
            if now - since <= self.idle_limit and chat.connected and not chat.broken:
                chat.reuse_count += 1
                return chat
            self.retire(chat)
        self.idle.pop(key, None)
        return None

    def reusable(self, chat: Chat) -> bool:
        if chat.broken or chat.quit_sent or not chat.connected:
            return False
        if time.monotonic() - chat.created >= self.time_limit:
            return False
        return not (self.count_limit and chat.reuse_count + 1 >= self.count_limit)

    def release(self, key: str, chat: Chat | None, cache: bool) -> None:
        """Park the session after a job, or say QUIT (in the background) and close it."""
        if chat is None:
            return
        if cache and self.reusable(chat):
            self.idle.setdefault(key, []).append((time.monotonic(), chat))
        else:
            self.retire(chat)

    def retire(self, chat: Chat) -> None:
        task = asyncio.create_task(chat.quit(self.quit_timeout))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def sweep(self) -> None:
        """Close sessions idle longer than the limit."""
        now = time.monotonic()
        for key in list(self.idle):
            keep = []
            for since, chat in self.idle[key]:
                if now - since > self.idle_limit or not chat.connected:
                    self.retire(chat)
                else:
                    keep.append((since, chat))
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep until the service stops, then close everything."""
        interval = max(0.2, min(self.idle_limit / 2, 5.0))
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)
            self.sweep()
        await self.close()

    async def close(self) -> None:
        for parked in self.idle.values():
            for _, chat in parked:
                self.retire(chat)
        self.idle.clear()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=min(self.quit_timeout, 5.0))
