"""The corrupt queue (≈ Postfix's ``corrupt/`` directory and qmgr_active_corrupt()).

Bus work that can never be handled is moved here once instead of being
retried forever: a payload that does not decode, or one whose handler has
failed ``postbus_bus_retry_limit`` times (the consumer loop decides; this
module only moves, lists and deletes). A record keeps the payload and its
original headers, plus ``Postbus-Corrupt-*`` headers saying why, what kind
of work it was, where it came from and when. A queue file is moved whole,
as Postfix renames a bad queue file: every subject under ``postbus.q.<qid>.>``
is copied to the corrupt stream and only then purged from the queue, so its
content and entry no longer count as live queue work.

Records are kept under the queue ID when the work names one (its subject,
or a delivery job's ``queue_id``), else under a fresh ID; that ID is what
``postqueue -p`` shows and ``postsuper -d`` takes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from postbus import metrics
from postbus.bus import subjects as s
from postbus.queue.entry import CodecError, DeliveryJob, QueueEntry
from postbus.queue.file import ENTRY_HEADER
from postbus.queue.ids import is_queue_id, new_queue_id

log = logging.getLogger("postbus.corrupt")

#: Kinds of bus work (the metric's label) and how the log line names them.
KINDS = {
    "message": "queue file",
    "status": "delivery status",
    "wakeup": "wake-up",
    "job": "delivery job",
    "other": "bus message",
}

REASON = "Postbus-Corrupt-Reason"
KIND = "Postbus-Corrupt-Kind"
QUEUE_ID = "Postbus-Corrupt-Queue-Id"
SUBJECT = "Postbus-Corrupt-Subject"
STREAM = "Postbus-Corrupt-Stream"
TIME = "Postbus-Corrupt-Time"
DELIVERIES = "Postbus-Corrupt-Deliveries"
REASON_MAX = 1000  # characters of a reason kept in its header

#: One original message to copy: subject, stream, sequence, headers, data.
Copy = tuple[str, str, int, "Mapping[str, str] | None", "bytes | None"]


def kind_of(subject: str) -> str:
    """Which kind of bus work a subject carries."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != s.ROOT:
        return "other"
    return {"q": "message", "status": "status", "wake": "wakeup", "deliver": "job"}.get(
        parts[1], "other"
    )


def queue_id_of(msg: Msg, kind: str) -> str:
    """The queue ID a piece of work names, or '' when none can be trusted."""
    qid = s.subject_queue_id(msg.subject)
    return qid if is_queue_id(qid) else ""


def _clean(text: str) -> str:
    """One header line: no line breaks, bounded."""
    return " ".join(str(text).split())[:REASON_MAX]


def _kept(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Original headers, minus those JetStream would act on (Nats-*)."""
    return {k: v for k, v in (headers or {}).items() if not k.lower().startswith("nats-")}


async def quarantine(js: JetStreamContext, msg: Msg, reason: str, deliveries: int = 0) -> str:
    """Move ``msg`` (and, for a queue file, all of it) to the corrupt queue.

    Every record is acknowledged by JetStream before anything is removed;
    the caller terminates ``msg`` afterwards. Returns the record ID. Logs
    one line and counts the move.
    """
    kind = kind_of(msg.subject)
    qid = queue_id_of(msg, kind)
    record_id = qid or new_queue_id()
    meta = {
        REASON: _clean(reason),
        KIND: kind,
        QUEUE_ID: qid,
        TIME: f"{time.time():.6f}",
        DELIVERIES: str(deliveries),
    }
    md = msg.metadata
    copies: list[Copy] = [(msg.subject, md.stream, md.sequence.stream, msg.headers, msg.data)]
    if kind == "message" and qid:
        copies += await _rest_of_queue_file(js, qid, msg.subject)
    for subject, stream, seq, headers, data in copies:
        await js.publish(
            s.corrupt_subject(record_id),
            data or b"",
            stream=s.CORRUPT_STREAM,
            headers={
                **_kept(headers), **meta, SUBJECT: subject, STREAM: stream,
                "Nats-Msg-Id": f"corrupt.{stream}.{seq}",
            },
        )
    if kind == "message" and qid:
        await js.purge_stream(s.QUEUE_STREAM, subject=s.message_filter(qid))
    elif md.stream == s.QUEUE_STREAM:  # a wake-up: the queue file keeps what it is given
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(md.stream, md.sequence.stream)
    log.warning('%s: saving corrupt %s from %s to queue "corrupt": %s',
                record_id, KINDS[kind], msg.subject, meta[REASON])
    metrics.corrupt_messages.labels(kind).inc()
    return record_id


async def _rest_of_queue_file(js: JetStreamContext, qid: str, seen: str) -> list[Copy]:
    """Entry and content chunks of a queue file, besides the one in hand."""
    info = await js.stream_info(s.QUEUE_STREAM, subjects_filter=s.message_filter(qid))
    out: list[Copy] = []
    for subject in sorted(info.state.subjects or {}):
        if subject == seen:
            continue
        try:
            raw = await js.get_last_msg(s.QUEUE_STREAM, subject, direct=True)
        except NotFoundError:
            continue
        out.append((subject, s.QUEUE_STREAM, raw.seq or 0, raw.headers, raw.data))
    return out


# -- postqueue and postsuper ------------------------------------------------------


@dataclass
class CorruptMessage:
    """Everything the corrupt queue holds under one ID, as postqueue shows it."""

    record_id: str
    kind: str = "other"
    reason: str = ""
    subject: str = ""
    moved: float = 0.0
    size: int = 0
    records: int = 0
    deliveries: int = 0  # times the bus had handed it out when it was moved
    sender: str | None = None  # None: unknown (nothing decodable names it)
    recipients: list[str] = field(default_factory=list)
    arrival: float | None = None

    @property
    def shown_time(self) -> float:
        """Arrival when known, else the time it was moved."""
        return self.arrival if self.arrival is not None else self.moved


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def _learn(found: CorruptMessage, headers: Mapping[str, str], data: bytes) -> None:
    """Fold one record into its message: reason, size, and what can be decoded."""
    subject = headers.get(SUBJECT, "")
    part_of_file = headers.get(KIND) == "message" and not subject.endswith(".msg")
    if found.records == 0 or not part_of_file:  # the record that was handled decides
        found.kind = headers.get(KIND, found.kind)
        found.reason = headers.get(REASON, found.reason)
        found.subject = subject or found.subject
        found.moved = _number(headers.get(TIME))
        found.deliveries = int(_number(headers.get(DELIVERIES)))
    found.records += 1
    entry: QueueEntry | DeliveryJob | None = None
    raw_entry = data if subject.endswith(".entry") else headers.get(ENTRY_HEADER, "").encode()
    try:
        if raw_entry:
            entry = QueueEntry.decode(raw_entry)
        elif found.kind == "job":
            entry = DeliveryJob.decode(data)
    except CodecError:
        entry = None
    if not subject.endswith(".entry"):
        found.size += len(data)
    if entry is not None:
        found.sender = entry.sender
        found.recipients = [str(r.address) for r in entry.recipients if not r.final]
        found.arrival = entry.arrival_time
        if isinstance(entry, QueueEntry):
            found.size = max(found.size, entry.size)


async def corrupt_messages(js: JetStreamContext) -> list[CorruptMessage]:
    """Every message in the corrupt queue, oldest move first."""
    info = await js.stream_info(s.CORRUPT_STREAM)
    found: dict[str, CorruptMessage] = {}
    seq = max(1, info.state.first_seq)
    while info.state.messages:
        try:
            raw = await js.get_msg(
                s.CORRUPT_STREAM, seq, subject=s.CORRUPT_SUBJECTS, direct=True, next=True
            )
        except NotFoundError:
            break
        if raw.seq is None:
            break
        seq = raw.seq + 1
        record_id = s.subject_queue_id(raw.subject or "")
        message = found.setdefault(record_id, CorruptMessage(record_id))
        _learn(message, raw.headers or {}, raw.data or b"")
    return sorted(found.values(), key=lambda m: m.moved)


async def remove(js: JetStreamContext, record_id: str) -> bool:
    """Delete one corrupt message (postsuper -d); False when there is none."""
    if not is_queue_id(record_id):
        return False
    subject = s.corrupt_subject(record_id)
    info = await js.stream_info(s.CORRUPT_STREAM, subjects_filter=subject)
    if not info.state.subjects:
        return False
    await js.purge_stream(s.CORRUPT_STREAM, subject=subject)
    return True
