"""Recording events without holding up mail: one writer per process, acknowledgements
checked in a window rather than awaited one by one.

A role records about three events per message. Awaiting each JetStream
acknowledgement in its own task (a task, a request future and a timeout
per event) cost the qmgr about a tenth of its CPU per message. Here the
events of a process are queued; one writer publishes them with a reply
subject of its own, at most ``WINDOW`` unacknowledged at a time, and one
subscription takes the acknowledgements. An event whose acknowledgement
does not come within ``postbus.events.PUBLISH_TIMEOUT`` is published once
more (its ``Nats-Msg-Id`` makes a second copy a duplicate JetStream drops),
then logged and counted as failed (``postbus_events_failed``), as an error
reply is at once. Events are observations: nothing here raises into mail
handling, and a kill of the role loses at most the events not yet
acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter

from postbus import events, metrics
from postbus.bus import subjects as s
from postbus.events import PUBLISH_TIMEOUT, Event

log = logging.getLogger("postbus.events")

WINDOW = 1000  # events published and not yet acknowledged, at most
RETRIES = 1  # publishes of an unacknowledged event after the first
CHECK_EVERY = 0.5  # seconds between looks for overdue acknowledgements


class _Sent:
    __slots__ = ("at", "event", "tries")

    def __init__(self, event: Event, at: float, tries: int) -> None:
        self.event, self.at, self.tries = event, at, tries


class EventRecorder:
    """The process's event writer on one NATS connection."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._queue: collections.deque[tuple[Event, int]] = collections.deque()
        self._sent: dict[str, _Sent] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._prefix = ""
        self._seq = 0

    def record(self, event: Event | None) -> None:
        """Queue an event (None, or a kind postbus_events_record leaves out: nothing)."""
        if event is None or event.kind not in events.recorded:
            return
        self._queue.append((event, 0))
        self._idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def drain(self) -> None:
        """Wait until every queued event is acknowledged or given up on."""
        if self._task is not None and not self._task.done():
            await self._idle.wait()

    async def _run(self) -> None:
        if not self._prefix:
            self._prefix = self.nc.new_inbox() + "."
            await self.nc.subscribe(self._prefix + "*", cb=self._acked)
        loop = asyncio.get_running_loop()
        last_check = time.monotonic()
        while True:
            self._wake.clear()  # what is recorded from here on wakes the wait below
            while self._queue and len(self._sent) < WINDOW:
                event, tries = self._queue.popleft()
                await self._publish(event, tries)
            if not self._queue and not self._sent:
                self._idle.set()
            if not self._queue or len(self._sent) >= WINDOW:
                # a timer rather than wait_for (a task per wait): a spurious wake is harmless
                timer = loop.call_later(CHECK_EVERY, self._wake.set) if self._sent else None
                await self._wake.wait()
                if timer is not None:
                    timer.cancel()
            now = time.monotonic()
            if now - last_check >= CHECK_EVERY:
                last_check = now
                self._overdue(now)

    async def _publish(self, event: Event, tries: int) -> None:
        self._seq += 1
        token = str(self._seq)
        self._sent[token] = _Sent(event, time.monotonic(), tries)
        try:
            await self.nc.publish(
                event.subject, event.encode(), reply=self._prefix + token,
                headers={"Nats-Msg-Id": event.id, "Nats-Expected-Stream": s.EVENTS_STREAM},
            )
        except Exception as exc:  # closed, or a reconnect buffer that is full
            del self._sent[token]
            self._failed(event, str(exc) or type(exc).__name__)

    def _overdue(self, now: float) -> None:
        late = [token for token, sent in self._sent.items() if now - sent.at > PUBLISH_TIMEOUT]
        for token in late:
            sent = self._sent.pop(token)
            if sent.tries < RETRIES:
                self._queue.append((sent.event, sent.tries + 1))
            else:
                self._failed(sent.event, "no acknowledgement from JetStream")
        if late:
            self._wake.set()

    async def _acked(self, msg: Msg) -> None:
        sent = self._sent.pop(msg.subject[len(self._prefix):], None)
        if sent is None:
            return  # given up on already
        status = msg.headers.get("Status") if msg.headers else None
        if status == "503":
            self._failed(sent.event, "no responders (the events stream is missing)")
        elif b'"error"' in msg.data:
            self._failed(sent.event, msg.data.decode(errors="replace")[:200])
        else:
            _published(sent.event.kind).inc()
        if self._queue or not self._sent:
            self._wake.set()

    @staticmethod
    def _failed(event: Event, why: str) -> None:
        log.warning("%s: cannot record event %s: %s", event.queue_id, event.kind, why)
        metrics.events_failed.labels(event.kind).inc()


_counters: dict[str, Counter] = {}


def _published(kind: str) -> Counter:
    """The kind's child of postbus_events_published (labels() is slow per call)."""
    counter = _counters.get(kind)
    if counter is None:
        counter = _counters[kind] = metrics.events_published.labels(kind)
    return counter
