"""The queue file on JetStream: what is queued (≈ mail_queue.c, the queue file).

Only this module knows how a message is laid out in ``POSTBUS_QUEUE`` (see
:mod:`postbus.bus.subjects`). Writing a new message (ingress, bounces,
sendmail) goes through :meth:`QueueFile.enqueue`, which returns only once
JetStream has acknowledged the message: the caller may then answer ``250``.

The entry lives in the header of chunk 0 (``.msg``) as received, and on
``.entry`` once the qmgr has had to write it; :meth:`get` reads whichever
is newer, in whichever bucket the message lives. Entries change only by
compare-and-set (:meth:`update`, :meth:`modify`). A message's one timer
(:meth:`set_timer`) is a JetStream message schedule in the same queue file,
so removing the message removes its timer too.

Removal (:meth:`remove`) costs nats-server an fsync of its own only for mail
in the long-lived bucket; mail in a time bucket gets a "done" mark on its
entry, written with others in one atomic batch (:mod:`postbus.bus.group_commit`),
and leaves with its bucket (:mod:`postbus.queue.buckets`). Deferring a message
moves it out of its time bucket (:meth:`move_out`), so that no bucket waits
for a retry.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from postbus.bus import subjects as s
from postbus.bus.ack_subject import stream_sequence
from postbus.bus.group_commit import WINDOW, GroupCommit
from postbus.bus.requests import WRONG_LAST_SEQUENCE, Found, Requests
from postbus.queue import gauges
from postbus.queue.entry import CodecError, QueueEntry
from postbus.queue.ids import new_queue_id

ENTRY_HEADER = "Postbus-Entry"
#: On an entry that is a mark, not an entry: "done" (removed) or "moved" (to the long bucket).
GONE_HEADER = "Postbus-Gone"
CHUNK_HEADROOM = 16 * 1024  # room for headers inside max_payload
WAKE_TTL = "3600s"  # how long a fired wake-up stays in the stream (consumed at once normally)
SEEN_MAX = 4096  # revisions whose queue is remembered (the qmgr reads, then writes)
PURGE_TIMEOUT = 5.0


class QueueConflict(Exception):
    """Someone else changed the entry since we read it (compare-and-set lost)."""


def first_attempt_id(seq: int) -> str:
    """The id of a message's first attempt: the stream sequence of its chunk 0,
    unique for the life of the stream even when a short queue ID recurs."""
    return f"s{seq}"


class QueueFile:
    """Read and change what is queued: every role that queues or reads mail has one."""

    def __init__(self, nc: NATS, js: JetStreamContext, *, mark_window: float = WINDOW) -> None:
        """``mark_window``: how long a done mark waits for company (0: only while the
        previous group is being written, for a tool that removes many at once)."""
        self.nc = nc
        self.js = js
        self._queues: dict[tuple[str, int], str] = {}
        self._last: dict[str, str] = {}
        self.chunk_size = max(64 * 1024, nc.max_payload - CHUNK_HEADROOM)
        self.requests = Requests(nc)
        self.marks = GroupCommit(self.requests, s.QUEUE_STREAM, mark_window)

    # -- new mail -------------------------------------------------------------

    async def enqueue(
        self,
        entry: QueueEntry,
        content: bytes,
        long_ids: bool = False,
        *,
        build: Callable[[str], bytes] | None = None,
        queue_id: str = "",
    ) -> str:
        """Store a new message durably; returns its queue ID.

        One write makes a message queued: chunk 0 of the content, carrying
        the queue entry in its headers, published only if its subject is
        new (so IDs stay unique across replicas). That message is also the
        qmgr's trigger. Continuation chunks of a large message go first, so
        the trigger never precedes its content. (Should a drawn ID collide,
        the chunks already written under it belong to the other message's
        subjects and leave with it.)

        ``build(queue_id)``, when given, returns the content to store under a
        freshly drawn ID (smtpd's Received: and Message-Id: headers name it);
        it runs again if that ID was taken, and may set entry fields that
        depend on the ID. ``content`` is then ignored.

        ``queue_id``: the ID to try first (cleanup drew it to name the message in
        its log lines). An entry on hold (a HOLD action) is counted there.
        """
        given_size = entry.size
        bucket = s.LONG_BUCKET if entry.queue == "hold" else s.time_bucket(time.time())
        entry.bucket = bucket
        # the caller's ID first (cleanup named the message by it in its log lines,
        # smtpd showed it to policy servers), if it is free
        wanted = queue_id or entry.queue_id
        for _ in range(10):
            entry.queue_id = qid = wanted or new_queue_id(long_ids)
            wanted = ""
            data = build(qid) if build is not None else content
            chunks = [
                data[i : i + self.chunk_size] for i in range(0, len(data), self.chunk_size)
            ] or [b""]
            entry.size = given_size or len(data)
            entry.chunks = len(chunks)
            try:
                if len(chunks) > 1:
                    await asyncio.gather(*(
                        self._publish_new(s.part_subject(qid, bucket, i), chunk)
                        for i, chunk in enumerate(chunks[1:], start=1)
                    ))
                await self._publish_new(
                    s.msg_subject(qid, bucket), chunks[0],
                    {ENTRY_HEADER: entry.encode().decode(),
                     # the ID is free in every bucket, not only in this one
                     "Nats-Expected-Last-Subject-Sequence-Subject": s.find_msg(qid)}
                )
                if entry.queue == "hold":
                    await gauges.move(self.js, None, "hold")
                return qid
            except QueueConflict:
                continue
        raise RuntimeError("cannot allocate a queue ID")

    async def _publish_new(
        self, subject: str, data: bytes, extra: dict[str, str] | None = None
    ) -> None:
        """Publish on a subject that must not exist yet (QueueConflict if it does)."""
        headers = {"Nats-Expected-Last-Subject-Sequence": "0", **(extra or {})}
        try:
            await self.requests.js_publish(subject, data, s.QUEUE_STREAM, headers)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise QueueConflict(subject) from exc
            raise

    @staticmethod
    def trigger_entry(msg: Msg) -> tuple[QueueEntry, int]:
        """The entry a new-mail trigger carries, at revision 0 ("not stored on its
        own subject yet"). A queue file always starts with its entry: CodecError
        when it does not."""
        raw = (msg.headers or {}).get(ENTRY_HEADER)
        if raw is None:
            raise CodecError("queue file without a queue entry")
        entry = QueueEntry.decode(raw.encode())
        seq = stream_sequence(msg)
        entry.attempt_id, entry.holder = first_attempt_id(seq), seq
        entry.bucket = s.bucket_of(msg.subject)
        return entry, 0

    # -- content --------------------------------------------------------------

    async def content(self, queue_id: str, chunks: int = 1, bucket: str = "") -> bytes:
        """The message as queued (``bucket``: where, when the caller knows);
        NotFoundError when it is gone."""
        if not bucket:
            return await self._content_anywhere(queue_id, chunks)
        last = self.requests.last_by_subject
        if chunks <= 1:
            return (await last(s.QUEUE_STREAM, s.msg_subject(queue_id, bucket))).data or b""
        msgs = await asyncio.gather(
            last(s.QUEUE_STREAM, s.msg_subject(queue_id, bucket)),
            *(last(s.QUEUE_STREAM, s.part_subject(queue_id, bucket, i))
              for i in range(1, chunks)))
        return b"".join(m.data or b"" for m in msgs)

    async def _content_anywhere(self, queue_id: str, chunks: int) -> bytes:
        found = await asyncio.gather(
            self.requests.last_matching(s.QUEUE_STREAM, s.find_msg(queue_id)),
            *(self.requests.last_matching(s.QUEUE_STREAM, s.find_part(queue_id, i))
              for i in range(1, chunks)))
        if any(chunk is None for chunk in found):
            raise NotFoundError
        return b"".join(chunk.data for chunk in found if chunk is not None)

    # -- entries --------------------------------------------------------------

    async def get(self, queue_id: str, bucket: str = "") -> tuple[QueueEntry, int] | None:
        """The entry and its revision, or None when the message is gone.

        ``bucket``: where the caller saw the message (a trigger, a job): read
        there by exact subject, which costs nats-server less than the wildcard
        search over every bucket; that search still runs when the bucket holds
        nothing of the message any more (swept after a move, or after its
        removal)."""
        last = self.requests.last_matching
        if bucket:
            found = await last(s.QUEUE_STREAM, s.entry_subject(queue_id, bucket))
            if found is not None:
                return await self._entry_of(queue_id, found)
            received = await self._as_received(s.msg_subject(queue_id, bucket))
            if received is not None:  # no entry written (nor moved)
                return received
        found = await last(s.QUEUE_STREAM, s.find_entry(queue_id))
        if found is None:
            return await self._as_received(s.find_msg(queue_id))
        return await self._entry_of(queue_id, found)

    async def _entry_of(self, queue_id: str, found: Found) -> tuple[QueueEntry, int] | None:
        """The entry a lookup found (following a "moved" mark), None for a "done" one."""
        gone = (found.headers or {}).get(GONE_HEADER)
        if gone == "moved":  # its entry is written in the long bucket, just before this mark
            moved = await self.requests.last_matching(
                s.QUEUE_STREAM, s.entry_subject(queue_id, s.LONG_BUCKET))
            if moved is None:
                return None
            found = moved
        elif gone is not None or not found.data:
            return None
        entry = QueueEntry.decode(found.data)
        entry.bucket = s.bucket_of(found.subject)
        self._seen(queue_id, found.seq, entry.queue)
        return entry, found.seq

    async def _as_received(self, where: str) -> tuple[QueueEntry, int] | None:
        """A message whose entry was never written: the one its trigger carries
        (``where``: its chunk 0's subject, or a filter over every bucket)."""
        found = await self.requests.last_matching(s.QUEUE_STREAM, where)
        if found is None:
            return None
        return self.received_entry(found), 0

    @staticmethod
    def received_entry(found: Found) -> QueueEntry:
        raw = (found.headers or {}).get(ENTRY_HEADER)
        if raw is None:
            raise CodecError("queue file without a queue entry")
        entry = QueueEntry.decode(raw.encode())
        entry.attempt_id, entry.holder = first_attempt_id(found.seq), found.seq
        entry.bucket = s.bucket_of(found.subject)
        return entry

    async def update(self, entry: QueueEntry, revision: int, *, was: str | None = None) -> int:
        """Write an entry only if its subject is still at ``revision`` (0: never
        written); returns the new revision. QueueConflict when someone was faster.

        When the entry changes queue, the shared queue counters move with it
        (:mod:`postbus.queue.gauges`); ``was``, the queue the entry was read
        in, spares a lookup when the caller knows it. A message deferred or
        held in a time bucket moves out of it (:meth:`move_out`): no bucket
        waits for a retry or an administrator."""
        if was is None:
            was = await self._queue_at(entry.queue_id, revision)
        if entry.queue in ("deferred", "hold") and s.bucket_number(entry.bucket) >= 0:
            return await self.move_out(entry, revision, was)
        try:
            ack = await self.requests.js_publish(
                s.entry_subject(entry.queue_id, entry.bucket),
                entry.encode(),
                s.QUEUE_STREAM,
                {"Nats-Expected-Last-Subject-Sequence": str(revision)},
            )
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise QueueConflict(entry.queue_id) from exc
            raise
        self._seen(entry.queue_id, ack.seq, entry.queue)
        await gauges.move(self.js, was, entry.queue)
        return int(ack.seq)

    def _seen(self, queue_id: str, revision: int, queue: str) -> None:
        """Remember which queue a revision we read or wrote is in (for update),
        and the last queue we saw a message in (for remove)."""
        self._queues[(queue_id, revision)] = queue
        self._last.pop(queue_id, None)
        self._last[queue_id] = queue
        if len(self._queues) > SEEN_MAX:
            del self._queues[next(iter(self._queues))]
        if len(self._last) > SEEN_MAX:
            del self._last[next(iter(self._last))]

    async def _queue_at(self, queue_id: str, revision: int) -> str | None:
        """The queue an entry's ``revision`` is in: remembered, else read back
        (None: as received, or unreadable: neither is counted)."""
        if revision == 0:
            return None
        queue = self._queues.pop((queue_id, revision), None)
        if queue is not None:
            return queue
        try:
            msg = await self.js.get_msg(s.QUEUE_STREAM, revision, direct=True)
            return QueueEntry.decode(msg.data or b"").queue
        except (NotFoundError, APIError, CodecError):
            return None

    async def modify(
        self, queue_id: str, change: Callable[[QueueEntry], bool]
    ) -> QueueEntry | None:
        """Read-change-write with retries; ``change`` returns False to leave it."""
        for _ in range(50):
            got = await self.get(queue_id)
            if got is None:
                return None
            entry, revision = got
            if not change(entry):
                return entry
            try:
                await self.update(entry, revision)
                return entry
            except QueueConflict:
                await asyncio.sleep(0.005)
        raise QueueConflict(queue_id)

    async def remove(self, queue_id: str, *, was: str | None = None, bucket: str = "") -> int:
        """Forget a message entirely, entry, content and timer; returns how many
        stream messages went (0: it was gone already; 1: marked done).

        In a time bucket (``bucket``, when the caller knows it) a message is
        marked done and leaves with its bucket; elsewhere it goes in one purge.
        ``was``: the queue it was in, for the queue counters; else the last
        queue this process saw it in (the qmgr removes mail at the end of an
        attempt: active, or on hold when postsuper -h came meanwhile)."""
        last = self._last.pop(queue_id, None)
        was = last if was is None else was
        if s.bucket_number(bucket) >= 0:
            await self.marks.write(s.entry_subject(queue_id, bucket), b"", {GONE_HEADER: "done"})
            await gauges.move(self.js, was, None)
            return 1
        purged = await self.requests.purge(s.QUEUE_STREAM, s.message_filter(queue_id),
                                           timeout=PURGE_TIMEOUT)
        if purged:
            await gauges.move(self.js, was, None)
        return purged

    async def move_out(self, entry: QueueEntry, revision: int, was: str | None) -> int:
        """Write ``entry`` in the long bucket, the message's content with it, so
        that its time bucket need not wait for it; returns the new revision.
        QueueConflict when the entry changed since ``revision`` was read.

        The content is copied first (a copy left by a crash, or by a move that
        lost its compare-and-set, is overwritten by the next move, or goes with
        the message: never removed here, as it may be the winner's); then one
        atomic batch writes
        the entry in the long bucket and the "moved" mark over the old one, by
        compare-and-set: the move happens whole or not at all."""
        old = entry.bucket
        content = await self.content(entry.queue_id, entry.chunks, old)
        chunks = [content[i : i + self.chunk_size]
                  for i in range(0, len(content), self.chunk_size)] or [b""]
        new = s.LONG_BUCKET
        await asyncio.gather(*(
            self.requests.js_publish(s.part_subject(entry.queue_id, new, i), chunk,
                                     s.QUEUE_STREAM)
            for i, chunk in enumerate(chunks[1:], start=1)))
        await self.requests.js_publish(s.msg_subject(entry.queue_id, new), chunks[0],
                                       s.QUEUE_STREAM)
        entry.bucket = new
        try:  # with other moves and marks, in one batch
            new_revision, _ = await self.marks.write_all([
                (s.entry_subject(entry.queue_id, new), entry.encode(),
                 {"Nats-Expected-Last-Subject-Sequence": "0"}),
                (s.entry_subject(entry.queue_id, old), b"",
                 {GONE_HEADER: "moved", "Nats-Expected-Last-Subject-Sequence": str(revision)}),
            ])
        except APIError as exc:
            entry.bucket = old
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise QueueConflict(entry.queue_id) from exc
            raise
        self._seen(entry.queue_id, new_revision, entry.queue)
        await gauges.move(self.js, was, entry.queue)
        return new_revision

    # -- the timer ------------------------------------------------------------

    async def set_timer(self, queue_id: str, when: float, attempt_id: str = "",
                        bucket: str = s.LONG_BUCKET) -> None:
        """Wake the qmgr for this message at ``when`` (replacing any earlier timer).

        A time that has come fires at once, as a plain wake-up."""
        payload = orjson.dumps({"queue_id": queue_id, "attempt_id": attempt_id})
        if when <= time.time():
            await self.js.publish(s.wake_subject(queue_id), payload, stream=s.QUEUE_STREAM)
            return
        at = datetime.fromtimestamp(math.ceil(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self.js.publish(
            s.timer_subject(queue_id, bucket), payload, stream=s.QUEUE_STREAM,
            headers={
                "Nats-Schedule": f"@at {at}",
                "Nats-Schedule-Target": s.wake_subject(queue_id),
                "Nats-Schedule-TTL": WAKE_TTL,
            },
        )

    @staticmethod
    def read_wakeup(data: bytes) -> tuple[str, str]:
        """The queue ID and attempt id a wake-up names (see :meth:`set_timer`)."""
        try:
            wakeup = orjson.loads(data)
            queue_id, attempt_id = wakeup["queue_id"], wakeup.get("attempt_id", "")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(f"bad wake-up: {exc}") from exc
        if not isinstance(queue_id, str) or not isinstance(attempt_id, str):
            raise CodecError("bad wake-up: queue_id or attempt_id of the wrong type")
        return queue_id, attempt_id

    # -- listing ----------------------------------------------------------------

    async def entries(self) -> AsyncIterator[QueueEntry]:
        """Every queue entry, streamed, for postqueue -p and postsuper
        (:mod:`postbus.queue.listing`)."""
        async for entry, _ in self.listing():
            yield entry

    def listing(self, *, received: bool = True) -> AsyncIterator[tuple[QueueEntry, int]]:
        """Every queue entry with its revision for :meth:`update` (0: as received);
        ``received=False``: only the entries that were written."""
        from postbus.queue.listing import listing  # listing reads this module's layout

        return listing(self.js, received=received)
