"""Moving queue files of an older release into buckets (run by the qmgr at start).

Releases before the time buckets kept a message under ``postbus.q.<qid>.>``.
Each such message is copied into this release's layout, then its old
subjects are purged, so nothing accepted before an upgrade is lost: mail as
received goes to the time bucket of now and is taken as new mail (a message
that was being delivered when the old release stopped is delivered again, as
after any restart in the middle of a delivery); mail with a written entry
(deferred, held, partly delivered) goes to the long bucket with its entry
and, when deferred, its timer. Replicas doing it at once copy each message
once: every copy is a compare-and-set on a subject that must be new.
"""

from __future__ import annotations

import logging
import time

from nats.js.errors import APIError, NotFoundError

from postbus.bus import subjects as s
from postbus.queue.entry import QueueEntry
from postbus.queue.file import ENTRY_HEADER, WRONG_LAST_SEQUENCE, QueueFile

log = logging.getLogger("postbus.queue")

OLD_MSG = f"{s.ROOT}.q.*.msg"  # four tokens: never a subject of this release


async def move_old_layout(queue: QueueFile) -> int:
    """Copy every queue file of the old layout into buckets; how many were moved."""
    info = await queue.js.stream_info(s.QUEUE_STREAM, subjects_filter=OLD_MSG)
    moved = 0
    for subject in sorted(info.state.subjects or {}):
        queue_id = subject.split(".")[2]
        try:
            await _move(queue, queue_id)
        except NotFoundError:
            continue  # removed meanwhile
        moved += 1
    if moved:
        log.info("moved %d queue files of an older release into time buckets", moved)
    return moved


async def _move(queue: QueueFile, queue_id: str) -> None:
    old = f"{s.ROOT}.q.{queue_id}"
    first = await queue.js.get_last_msg(s.QUEUE_STREAM, f"{old}.msg")
    headers = dict(first.headers or {})
    try:
        written = await queue.js.get_last_msg(s.QUEUE_STREAM, f"{old}.entry")
        entry: QueueEntry | None = QueueEntry.decode(written.data or b"")
    except NotFoundError:
        entry = None
    chunks = [first.data or b""]
    index = 1
    while True:
        try:
            part = await queue.js.get_last_msg(s.QUEUE_STREAM, f"{old}.part.{index}")
        except NotFoundError:
            break
        chunks.append(part.data or b"")
        index += 1
    bucket = s.LONG_BUCKET if entry is not None else s.time_bucket(time.time())
    try:
        for number, chunk in enumerate(chunks[1:], start=1):
            await queue.requests.js_publish(s.part_subject(queue_id, bucket, number), chunk,
                                            s.QUEUE_STREAM)
        kept = {ENTRY_HEADER: headers[ENTRY_HEADER]} if ENTRY_HEADER in headers else {}
        if entry is None:  # a new-mail trigger: once only
            kept.update({"Nats-Expected-Last-Subject-Sequence": "0",
                         "Nats-Expected-Last-Subject-Sequence-Subject": s.find_msg(queue_id)})
        await queue.requests.js_publish(s.msg_subject(queue_id, bucket), chunks[0],
                                        s.QUEUE_STREAM, kept)
        if entry is not None:
            entry.bucket = bucket
            await queue.requests.js_publish(
                s.entry_subject(queue_id, bucket), entry.encode(), s.QUEUE_STREAM,
                {"Nats-Expected-Last-Subject-Sequence": "0"})
            if entry.queue == "deferred":
                await queue.set_timer(queue_id, entry.next_attempt, entry.attempt_id, bucket)
    except APIError as exc:
        if exc.err_code not in WRONG_LAST_SEQUENCE:
            raise  # else another replica copied it first
    await queue.js.purge_stream(s.QUEUE_STREAM, subject=f"{old}.>")
