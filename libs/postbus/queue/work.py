"""Work in flight between the roles: delivery jobs, their results, events (≈ the
qmgr-to-delivery-agent protocol of Postfix, deliver_request.c and deliver_completed).

Jobs and results travel on ``POSTBUS_WORK``, a memory stream (see
:mod:`postbus.bus.subjects` for why losing them costs a retry, not mail).
Every publish carries an idempotency key (``Nats-Msg-Id``) built from the
attempt id, which is unique for the life of the queue (not the queue ID:
short queue IDs recur); a duplicate PubAck therefore means "this very job
or result was published already", which is what a retry after a crash
expects, and is logged at debug level rather than ignored.

An attempt is held open by the trigger or wake-up that started it: that
message stays pending on its durable consumer, and its ack subject (the
*token*) travels with every job and result, so whichever qmgr records the
outcome ends the attempt with :meth:`WorkBus.end_attempt`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import BadRequestError, NotFoundError

from postbus import events
from postbus.bus import subjects as s
from postbus.bus.requests import Requests
from postbus.events_recorder import EventRecorder
from postbus.queue.entry import DeliveryJob, DeliveryStatus

log = logging.getLogger("postbus.queue")


class WorkBus:
    """Publish and read work: every role holds one of these."""

    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self.recorder = EventRecorder(nc)
        self.requests = Requests(nc)

    async def _publish(self, subject: str, data: bytes, key: str) -> None:
        ack = await self.requests.js_publish(subject, data, s.WORK_STREAM, {"Nats-Msg-Id": key})
        if ack.duplicate:
            log.debug("%s: %s was published already", subject, key)

    async def submit_job(self, job: DeliveryJob, parked: int = 0) -> None:
        """Hand a job to its transport (the agents read the content themselves);
        ``parked``: the sequence it waited under, when it is handed out again. The key
        names the transport: local(8) may pass a recipient of its own job to another
        (mailbox_transport) within the same attempt."""
        key = f"{job.attempt_id}.{job.indexes[0]}.{job.transport}.job" + (
            f".{parked}" if parked else "")
        await self._publish(s.deliver_subject(job.transport, job.queue_id), job.encode(), key)

    async def park_job(self, job: DeliveryJob, key: str) -> None:
        """Leave a job to wait for a slot at its destination (``key`` names it)."""
        ident = f"{job.attempt_id}.{job.indexes[0]}.wait"
        await self._publish(s.wait_subject(job.transport, key, job.queue_id), job.encode(), ident)

    async def first_parked(self, transport: str, key: str) -> tuple[int, DeliveryJob] | None:
        """The oldest job waiting for a destination, with its stream sequence."""
        raw = await self._first(s.wait_filter(transport, key))
        return None if raw is None else (raw.seq or 0, DeliveryJob.decode(raw.data or b""))

    async def unpark(self, seq: int) -> None:
        """Forget a waiting job (moved on, or settled): gone already is fine."""
        with contextlib.suppress(NotFoundError, BadRequestError):
            await self.js.delete_msg(s.WORK_STREAM, seq)

    async def parked_job_of(self, queue_id: str) -> DeliveryJob | None:
        """A job of this message waiting for its destination, if any."""
        raw = await self._first(f"{s.ROOT}.wait.*.*.{queue_id}")
        return None if raw is None else DeliveryJob.decode(raw.data or b"")

    async def job_running(self, transport: str, queue_id: str) -> bool:
        """A job of this message is with this transport's agents, or its result waits."""
        for subject in (s.deliver_subject(transport, queue_id), s.status_subject(queue_id)):
            if await self._first(subject) is not None:
                return True
        return False

    async def _first(self, subject: str) -> RawStreamMsg | None:
        try:
            return await self.js.get_msg(s.WORK_STREAM, seq=1, subject=subject, next=True,
                                         direct=True)
        except NotFoundError:
            return None

    @staticmethod
    def read_job(msg: Msg) -> DeliveryJob:
        return DeliveryJob.decode(msg.data)

    async def report(self, status: DeliveryStatus) -> None:
        """A delivery agent's report on one job, for whichever qmgr takes it."""
        first = status.results[0].index if status.results else 0
        key = f"{status.attempt_id}.{first}.{status.transport}.status"
        await self._publish(s.status_subject(status.queue_id), status.encode(), key)

    async def in_flight(self, queue_id: str) -> bool:
        """A job or a result of this message is still on the bus (waiting for its
        destination or an agent, or taken by an agent that has not finished)."""
        for subject in (f"{s.ROOT}.deliver.*.{queue_id}", s.status_subject(queue_id),
                        f"{s.ROOT}.wait.*.*.{queue_id}"):
            if await self._first(subject) is not None:
                return True
        return False

    async def end_attempt(self, token: str) -> None:
        """Acknowledge the trigger or wake-up that held an attempt open."""
        if token:
            await self.nc.publish(token, b"+ACK")

    async def event(self, kind: str, queue_id: str, **fields: Any) -> None:
        """Record a state change by name (:func:`postbus.events.event_named`)."""
        self.recorder.record(events.event_named(kind, queue_id, **fields))

    def record(self, event: events.Event | None) -> None:
        """Record a built event (:mod:`postbus.events`); None records nothing.

        Records are made in the background (:mod:`postbus.events_recorder`):
        an observer must never slow the mail down, and the recording itself
        logs and counts what fails."""
        self.recorder.record(event)

    async def drain(self) -> None:
        """Wait for the events still being recorded (before the connection closes)."""
        await self.recorder.drain()
