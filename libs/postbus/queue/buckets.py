"""Removing time buckets whole (the cheap removal of delivered mail).

New mail is written to the time bucket of its arrival
(``postbus.q.t.<n>.<qid>.>``, :mod:`postbus.bus.subjects`); a message that is
delivered or bounced gets a "done" mark on its entry, one moved to the long
bucket a "moved" mark. A bucket is purged once every message in it carries
a mark: one purge removes thousands of messages for about what a single
per-message purge costs nats-server (its tombstones are written with one
flush), where a purge per message costs an fsync each.

Safe against what is written meanwhile: the purge is bounded by a stream
sequence below which every message of the bucket was seen marked (a late
arrival, or a message still being delivered, stays), so a sweep never
removes what it has not checked. Sweeping twice, from two qmgr replicas,
removes nothing twice. Which buckets exist: those the qmgr saw triggers
from, and, at start and every :data:`DISCOVER_INTERVAL`, a walk over the
buckets on disk (a bucket seen only by a qmgr that died is still swept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import APIError

from postbus.bus import subjects as s
from postbus.bus.requests import Requests
from postbus.queue.file import GONE_HEADER
from postbus.queue.listing import last_per_subject

log = logging.getLogger("postbus.queue")

SWEEP_INTERVAL = 1.0  # seconds between sweeps
DISCOVER_INTERVAL = 60.0  # seconds between walks over the buckets on disk
RECHECK = 5.0  # seconds before a bucket held by mail in flight is read again


class Sweeper:
    """Purges the time buckets whose every message is marked (one per qmgr)."""

    def __init__(self, js: JetStreamContext, requests: Requests) -> None:
        self.js = js
        self.requests = requests
        self.known: dict[int, float] = {}  # bucket number -> when to look at it again
        self.discovered = 0.0

    def saw(self, bucket: str) -> None:
        """A trigger from ``bucket`` came by: sweep it once it is closed."""
        number = s.bucket_number(bucket)
        if number >= 0 and number not in self.known:
            self.known[number] = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # the bus may be restarting: next time
                log.debug("buckets not swept: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), SWEEP_INTERVAL)

    async def sweep(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if now - self.discovered >= DISCOVER_INTERVAL:
            await self.discover()
            self.discovered = now
        current = s.bucket_number(s.time_bucket(now))
        for number in sorted(self.known):
            if number >= current or self.known[number] > now:
                continue  # still filling, or held by mail in flight: later
            if await self.sweep_bucket(f"t.{number}"):
                del self.known[number]
            else:
                self.known[number] = now + RECHECK

    async def discover(self) -> None:
        """Every time bucket on disk, oldest first (one direct get per bucket)."""
        seq = 1
        while True:
            found = await self.requests.direct_get(
                s.QUEUE_STREAM, {"seq": seq, "next_by_subj": s.TIME_BUCKETS})
            if found is None:
                return
            bucket = s.bucket_of(found.subject)
            self.saw(bucket)
            last = await self.requests.last_matching(s.QUEUE_STREAM, s.bucket_filter(bucket))
            seq = max(found.seq, last.seq if last else 0) + 1

    async def sweep_bucket(self, bucket: str) -> bool:
        """Purge what is marked in ``bucket``; True when nothing is left in it."""
        info = await self.js.stream_info(s.QUEUE_STREAM, subjects_filter=s.bucket_filter(bucket))
        subjects = info.state.subjects or {}
        if not subjects:
            return True
        last_seq = info.state.last_seq
        queued = {s.queue_id_of(subject) for subject in subjects if subject.endswith(".msg")}
        marked: set[str] = set()
        async for msg in last_per_subject(js=self.js, subject=f"{s.ROOT}.q.{bucket}.*.entry",
                                          headers_only=True):
            if (msg.headers or {}).get(GONE_HEADER):
                marked.add(s.queue_id_of(msg.subject))
        live = queued - marked
        bound = last_seq + 1
        for queue_id in live:  # mail in flight: purge only below its first subject
            first = await self.requests.direct_get(
                s.QUEUE_STREAM, {"seq": 1, "next_by_subj": f"{s.ROOT}.q.{bucket}.{queue_id}.>"})
            if first is not None:
                bound = min(bound, first.seq)
        try:
            purged = await self.requests.purge(s.QUEUE_STREAM, s.bucket_filter(bucket), bound)
        except APIError as exc:
            log.debug("bucket %s not purged: %s", bucket, exc)
            return False
        if purged:
            log.debug("bucket %s: %d purged", bucket, purged)
        return not live and bound == last_seq + 1
