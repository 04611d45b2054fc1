"""Listing the whole queue, streamed (≈ showq(8) scanning the queue directories).

A listing reads the queue file with two ordered (ephemeral) JetStream
consumers, one subject each, last message per subject:

1. ``postbus.q.*.*.*.entry``: every entry the qmgr (or postsuper) has
   written, in every bucket; a mark ("done", "moved") is no entry, but
   hides the message as received;
2. ``postbus.q.*.*.*.msg`` with headers only: every message as received
   (its entry rides in the ``Postbus-Entry`` header), skipping those seen
   in step 1 (a written entry wins).

Entries come out as they arrive, so the first line of ``postqueue -p`` is
out long before the last, and nothing is left out however large the queue
(STREAM.INFO's subject list stops at 100,000). The order is the stream's,
not arrival time: showq promises no order either (it lists directories).

A message whose entry was never written and whose trigger the qmgr has
taken (its sequence lies between the qmgr-incoming consumer's ack floor and
its last delivered sequence) is listed as ``active``, as showq lists a
message its qmgr has moved to ``active/``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from postbus.bus import subjects as s
from postbus.queue.entry import CodecError, QueueEntry
from postbus.queue.file import ENTRY_HEADER, first_attempt_id

WINDOW = 4096  # messages read ahead of the caller (flow control does the rest)
IDLE = 2.0  # seconds without a message before asking JetStream whether any are left


@dataclass(frozen=True)
class Taken:
    """Which new-mail triggers the qmgr has taken but not finished with."""

    ack_floor: int = 0
    delivered: int = 0

    def active(self, seq: int) -> bool:
        return self.ack_floor < seq <= self.delivered


async def taken(js: JetStreamContext) -> Taken:
    """Where the qmgr's new-mail consumer stands (nothing taken when it is gone)."""
    try:
        info = await js.consumer_info(s.QUEUE_STREAM, s.QMGR_INCOMING_CONSUMER)
    except NotFoundError:
        return Taken()
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    delivered = info.delivered.stream_seq if info.delivered else 0
    return Taken(floor, delivered)


async def last_per_subject(
    js: JetStreamContext, subject: str, *, headers_only: bool = False
) -> AsyncIterator[Msg]:
    """The last message of every subject matching ``subject``, as they come.

    An ordered push consumer: JetStream's flow control holds it to the pace
    of the caller (a slow terminal does not fill memory), and a gap is
    healed by the client re-creating it where it left off. The listing ends
    at the message after which nothing is pending, or when JetStream says
    nothing is pending (messages removed while we read)."""
    inbox: asyncio.Queue[Msg] = asyncio.Queue(WINDOW)

    async def take(msg: Msg) -> None:
        await inbox.put(msg)

    sub = await js.subscribe(
        subject, stream=s.QUEUE_STREAM, ordered_consumer=True, cb=take,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, headers_only=headers_only,
    )
    try:
        info = await sub.consumer_info()
        if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
            return  # nothing to list
        while True:
            if inbox.empty():
                try:
                    msg = await asyncio.wait_for(inbox.get(), IDLE)
                except TimeoutError:
                    if inbox.empty() and not (await sub.consumer_info()).num_pending:
                        return
                    continue
            else:
                msg = inbox.get_nowait()
            yield msg
            if msg.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _written(msg: Msg) -> QueueEntry | None:
    if not msg.data:
        return None  # a mark: removed, or moved to the entry in the long bucket
    entry = QueueEntry.decode(msg.data)
    entry.bucket = s.bucket_of(msg.subject)
    return entry


def _as_received(msg: Msg, now_taken: Taken) -> QueueEntry | None:
    raw = (msg.headers or {}).get(ENTRY_HEADER)
    if raw is None:
        return None
    entry = QueueEntry.decode(raw.encode())
    seq = msg.metadata.sequence.stream
    entry.attempt_id, entry.holder = first_attempt_id(seq), seq
    entry.bucket = s.bucket_of(msg.subject)
    if entry.queue == "incoming" and now_taken.active(seq):
        entry.queue = "active"
    return entry


async def listing(
    js: JetStreamContext, *, received: bool = True
) -> AsyncIterator[tuple[QueueEntry, int]]:
    """Every queued message's entry and its revision (0: as received), streamed.

    ``received=False`` lists only the entries that were written (deferred,
    held, retried, partly delivered mail). An entry that cannot be decoded
    is left out: the qmgr moves it to the corrupt queue."""
    written: set[str] = set()
    async for msg in last_per_subject(js, s.ENTRY_FILTER):
        written.add(s.queue_id_of(msg.subject))  # even when unreadable: not as received
        try:
            entry = _written(msg)
        except CodecError:
            continue
        if entry is None:
            continue
        yield entry, msg.metadata.sequence.stream
    if not received:
        return
    now_taken = await taken(js)
    async for msg in last_per_subject(js, s.MSG_FILTER, headers_only=True):
        if s.queue_id_of(msg.subject) in written:
            continue
        try:
            entry = _as_received(msg, now_taken)
        except CodecError:
            continue
        if entry is not None:
            yield entry, 0
