"""The queue on JetStream: content, entries, jobs and wake-ups (≈ mail_queue.c).

Only this module knows how a message is laid out on the bus. Writing a new
message (ingress, bounces, sendmail) goes through :meth:`QueueStore.enqueue`,
which returns only once JetStream has acknowledged the queue entry and every
content chunk: the caller may then answer ``250``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from postbus import events, metrics
from postbus.bus import subjects as s
from postbus.queue.entry import CodecError, DeliveryJob, DeliveryStatus, QueueEntry
from postbus.queue.ids import new_queue_id

qmgr_log = logging.getLogger("postbus.qmgr")

WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream: expected last subject sequence differs
ENTRY_HEADER = "Postbus-Entry"
JOB_HEADER = "Postbus-Job"
CHUNK_HEADROOM = 16 * 1024  # room for headers inside max_payload


class QueueConflict(Exception):
    """Someone else changed the entry since we read it (compare-and-set lost)."""


class QueueStore:
    """Read and change the queue: every service holds one of these."""

    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self.chunk_size = max(64 * 1024, nc.max_payload - CHUNK_HEADROOM)

    @classmethod
    async def open(cls, nc: NATS) -> QueueStore:
        return cls(nc, nc.jetstream())

    async def _put_entry(self, entry: QueueEntry, last: int) -> int:
        """Write an entry only if its subject is still at sequence ``last``
        (0: must not exist yet); returns the new revision."""
        try:
            ack = await self.js.publish(
                s.entry_subject(entry.queue_id),
                entry.encode(),
                stream=s.QUEUE_STREAM,
                headers={"Nats-Expected-Last-Subject-Sequence": str(last)},
            )
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise QueueConflict(entry.queue_id) from exc
            raise
        return int(ack.seq)

    # -- new mail -------------------------------------------------------------

    async def enqueue(
        self,
        entry: QueueEntry,
        content: bytes,
        long_ids: bool = False,
        *,
        build: Callable[[str], bytes] | None = None,
    ) -> str:
        """Store a new message durably; returns its queue ID.

        One write makes a message queued: chunk 0 of the content, carrying
        the queue entry in its headers, published only if its subject is
        new (so IDs stay unique across replicas). That message is also the
        qmgr's trigger; until the qmgr first stores the entry on its own
        subject, :meth:`get` reads it from there. Continuation chunks of a
        large message go first, so the trigger never precedes its content.
        (Should a drawn ID collide, the chunks already written under it
        belong to the other message's subjects and leave with it.)

        ``build(queue_id)``, when given, returns the content to store under a
        freshly drawn ID (smtpd's Received: and Message-Id: headers name it);
        it runs again if that ID was taken, and may set entry fields that
        depend on the ID. ``content`` is then ignored.
        """
        given_size = entry.size
        for _ in range(10):
            entry.queue_id = qid = new_queue_id(long_ids)
            data = build(qid) if build is not None else content
            chunks = [
                data[i : i + self.chunk_size] for i in range(0, len(data), self.chunk_size)
            ] or [b""]
            entry.size = given_size or len(data)
            entry.chunks = len(chunks)
            try:
                if len(chunks) > 1:
                    await asyncio.gather(*(
                        self._publish_new(s.part_subject(qid, i), chunk)
                        for i, chunk in enumerate(chunks[1:], start=1)
                    ))
                await self._publish_new(
                    s.msg_subject(qid), chunks[0], {ENTRY_HEADER: entry.encode().decode()}
                )
                await self.event("incoming", qid, size=entry.size, nrcpt=len(entry.recipients))
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
            await self.js.publish(subject, data, stream=s.QUEUE_STREAM, headers=headers)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise QueueConflict(subject) from exc
            raise

    @staticmethod
    def trigger_entry(msg: Msg) -> tuple[QueueEntry, int] | None:
        """The entry a new-mail trigger carries, at revision 0 ("not stored
        on its own subject yet"); None when absent."""
        raw = (msg.headers or {}).get(ENTRY_HEADER)
        if raw is None:
            return None
        try:
            return QueueEntry.decode(raw.encode()), 0
        except CodecError:
            return None

    # -- content --------------------------------------------------------------

    async def content(self, queue_id: str, chunks: int = 1) -> bytes:
        first = self.js.get_last_msg(s.QUEUE_STREAM, s.msg_subject(queue_id), direct=True)
        rest = [
            self.js.get_last_msg(s.QUEUE_STREAM, s.part_subject(queue_id, i), direct=True)
            for i in range(1, chunks)
        ]
        msgs = await asyncio.gather(first, *rest)
        return b"".join(m.data or b"" for m in msgs)

    # -- entries --------------------------------------------------------------

    async def get(self, queue_id: str) -> tuple[QueueEntry, int] | None:
        """The entry and its revision, or None when the message is gone."""
        try:
            msg = await self.js.get_last_msg(
                s.QUEUE_STREAM, s.entry_subject(queue_id), direct=True
            )
        except NotFoundError:
            return await self._incoming(queue_id)
        if not msg.data or msg.seq is None:
            return None
        return QueueEntry.decode(msg.data), msg.seq

    async def _incoming(self, queue_id: str) -> tuple[QueueEntry, int] | None:
        """A message the qmgr has not taken in yet: its entry is in the trigger."""
        try:
            msg = await self.js.get_last_msg(s.QUEUE_STREAM, s.msg_subject(queue_id), direct=True)
        except NotFoundError:
            return None
        raw = (msg.headers or {}).get(ENTRY_HEADER)
        if raw is None:  # every queue file starts with its entry: this one is damaged
            raise CodecError("queue file without a queue entry")
        return QueueEntry.decode(raw.encode()), 0

    async def update(self, entry: QueueEntry, revision: int) -> int:
        return await self._put_entry(entry, revision)

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

    async def remove(self, queue_id: str) -> None:
        """Forget a message entirely, entry and content, in one purge."""
        await self.js.purge_stream(s.QUEUE_STREAM, subject=s.message_filter(queue_id))

    async def retire(self, queue_id: str, all_sent: bool) -> None:
        """Remove a message whose every recipient is final (≈ qmgr's "removed")."""
        await self.remove(queue_id)
        qmgr_log.info("%s: removed", queue_id)
        reason = "delivered" if all_sent else "bounced"
        metrics.qmgr_messages_removed.labels(reason).inc()
        await self.event("removed", queue_id, reason=reason)

    async def settle(self, status: DeliveryStatus, whole: bool = False) -> None:
        """A delivery agent's report. When it completes a message with every
        recipient sent, the agent removes the message itself, as Postfix's
        agents mark recipients done in the queue file; anything else (partial
        progress, deferrals, bounces) goes to the qmgr, which owns retries and
        notices. ``whole``: the job held every recipient of the message, so
        all-sent needs no look at the entry."""
        if whole and all(r.status == "sent" for r in status.results):
            await self.retire(status.queue_id, True)
            return
        got = await self.get(status.queue_id)
        if got is not None:
            entry, _ = got
            if entry.record(status) and entry.all_sent():
                await self.retire(entry.queue_id, True)
                return
        await self.report(status)

    async def entries(self) -> AsyncIterator[QueueEntry]:
        """Every queue entry, for postqueue -p and postsuper."""
        ids: dict[str, None] = {}
        for subjects in (s.ENTRY_FILTER, s.MSG_TRIGGER_FILTER):  # taken in, then incoming
            info = await self.js.stream_info(s.QUEUE_STREAM, subjects_filter=subjects)
            ids.update((s.queue_id_of(subject), None) for subject in info.state.subjects or {})
        for queue_id in ids:
            try:
                got = await self.get(queue_id)
            except CodecError:
                continue  # the qmgr moves it to the corrupt queue (postbus.queue.corrupt)
            if got is not None:
                yield got[0]

    # -- work for other roles ---------------------------------------------------

    async def submit_job(self, job: DeliveryJob, content: bytes | None = None) -> None:
        """Hand a job to its transport; small content may ride along, which
        spares the agent a read (the job then travels in a header)."""
        msg_id = f"{job.queue_id}.{job.attempt}.{job.transport}.{job.indexes[0]}"
        headers = {"Nats-Msg-Id": msg_id}
        data = job.encode()
        if content is not None:
            headers[JOB_HEADER] = data.decode()
            data = content
        await self.js.publish(
            s.deliver_subject(job.transport), data, stream=s.DELIVER_STREAM, headers=headers
        )

    @staticmethod
    def read_job(msg: Msg) -> tuple[DeliveryJob, bytes | None]:
        """The job in a delivery message, and its content when it came along."""
        job_header = (msg.headers or {}).get(JOB_HEADER)
        if job_header is not None:
            return DeliveryJob.decode(job_header.encode()), msg.data
        return DeliveryJob.decode(msg.data), None

    async def report(self, status: DeliveryStatus) -> None:
        first = status.results[0].index if status.results else 0
        msg_id = f"{status.queue_id}.{status.attempt}.{status.transport}.{first}"
        await self.js.publish(
            s.status_subject(status.queue_id),
            status.encode(),
            stream=s.STATUS_STREAM,
            headers={"Nats-Msg-Id": msg_id},
        )

    async def wake_later(self, entry: QueueEntry, *, now: bool = False) -> None:
        """Leave a wake-up for a deferred message (consumed by the qmgr).

        One wake-up per attempt is de-duplicated; ``now`` (postqueue -f,
        postsuper -H/-r) always adds another, which finds the message due."""
        payload = orjson.dumps({"queue_id": entry.queue_id, "attempts": entry.attempts})
        tag = f"wake.{uuid.uuid4().hex}" if now else f"defer.{entry.attempts}"
        await self.js.publish(
            s.defer_subject(entry.queue_id),
            payload,
            stream=s.DEFER_STREAM,
            headers={"Nats-Msg-Id": f"{entry.queue_id}.{tag}"},
        )

    @staticmethod
    def read_wakeup(data: bytes) -> tuple[str, int]:
        """The queue ID and attempt count a wake-up names (see :meth:`wake_later`)."""
        try:
            wakeup = orjson.loads(data)
            queue_id, attempts = wakeup["queue_id"], wakeup["attempts"]
        except (ValueError, TypeError, KeyError) as exc:
            raise CodecError(f"bad wake-up: {exc}") from exc
        if not isinstance(queue_id, str) or type(attempts) is not int:
            raise CodecError("bad wake-up: queue_id or attempts of the wrong type")
        return queue_id, attempts

    async def event(self, kind: str, queue_id: str, **fields: Any) -> None:
        """Record a state change for observers (:func:`postbus.events.publish_event`):
        durable once it returns, and it never raises."""
        await events.publish_event(self.js, kind, queue_id, **fields)
