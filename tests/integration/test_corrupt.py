"""Poison on the bus: each kind ends in the corrupt queue once, and a table
failure while routing is a 4.3.0 deferral (a real qmgr, nats-server and redis-server)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from postbus.bus import subjects as s
from postbus.queue import corrupt
from postbus.queue.admin import Bus
from postbus.queue.corrupt import CorruptMessage
from postbus.queue.entry import CODEC_VERSION, DeliveryStatus, QueueEntry, RcptResult, Recipient
from postbus.queue.file import ENTRY_HEADER
from postbus.queue.ids import new_queue_id
from postbus.queue.work import WorkBus
from postbus.servers import ServerProcess, free_port

pytestmark = pytest.mark.integration

LIMIT = 3  # postbus_bus_retry_limit of these tests


@dataclass
class Qmgr:
    conf: Path
    log: Path
    metrics_port: int

    def lines(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]

    def metric(self, sample: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(sample + " "):
                    return float(line.split()[-1])
        return 0.0


def start_qmgr(tmp_path: Path, settings: str) -> tuple[Qmgr, subprocess.Popen[bytes]]:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(
        "myhostname = mail.postbus.test\n"
        "mydestination = $myhostname, postbus.test\n"
        "relayhost = [127.0.0.1]:2526\n"
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n"
        f"postbus_bus_retry_limit = {LIMIT}\npostbus_bus_retry_max_delay = 1s\n"
        f"data_directory = {tmp_path}\n" + settings
    )
    (conf / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    port = free_port()
    out = tmp_path / "qmgr.out"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qmgr", "-c", str(conf), "-n", "qmgr",
             "--metrics", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    return Qmgr(conf, out, port), proc


@pytest.fixture
def strict_qmgr(tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> Iterator[Qmgr]:
    started, proc = start_qmgr(
        tmp_path, f"postbus_nats_url = {nats.url}\npostbus_redis_url = {redis.url}/0\n")
    yield started
    proc.terminate()
    proc.wait(10)


def postbus(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
        capture_output=True, text=True, timeout=60,
    )


async def wait_for(
    check: Callable[[], Awaitable[object]], what: str, timeout: float = 20
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def corrupt_record(store: Bus, record_id: str) -> CorruptMessage:
    async def find() -> CorruptMessage | None:
        return next(
            (m for m in await corrupt.corrupt_messages(store.js) if m.record_id == record_id), None
        )

    found = await wait_for(find, f"{record_id} in the corrupt queue")
    assert isinstance(found, CorruptMessage)
    return found


async def settled(store: Bus, stream: str, durable: str, subject: str) -> None:
    """The consumer holds nothing unacknowledged and the stream no longer has the work."""

    async def check() -> bool:
        info = await store.js.consumer_info(stream, durable)
        left = await store.js.stream_info(stream, subjects_filter=subject)
        return info.num_ack_pending == 0 and info.num_pending == 0 and not left.state.subjects

    await wait_for(check, f"{durable} to let go of {subject}")


def versioned(data: dict[str, object]) -> bytes:
    return orjson.dumps({**data, "v": CODEC_VERSION})


# -- each kind of poison, published by hand ------------------------------------------

BUCKET = "t.1"  # a time bucket long closed: what is live in it stays


def in_bucket(queue_id: str) -> str:
    return s.msg_subject(queue_id, BUCKET)


async def undecodable_trigger(store: Bus, qid: str) -> None:
    await store.js.publish(s.msg_subject(qid, BUCKET), b"Subject: x\r\n\r\nbody\r\n",
                           stream=s.QUEUE_STREAM, headers={ENTRY_HEADER: "{not json"})


async def trigger_that_raises(store: Bus, qid: str) -> None:
    """Decodes, but names a queue ID that is no bus subject: every write fails."""
    entry = QueueEntry("no such id", "alice@client.test", [Recipient("x@remote.test")])
    await store.js.publish(s.msg_subject(qid, BUCKET), b"Subject: x\r\n\r\nbody\r\n",
                           stream=s.QUEUE_STREAM, headers={ENTRY_HEADER: entry.encode().decode()})


async def undecodable_status(store: Bus, qid: str) -> None:
    await store.js.publish(s.status_subject(qid), b"\x00garbage", stream=s.WORK_STREAM)


async def status_that_raises(store: Bus, qid: str) -> None:
    """A held message and a status for it that names a queue ID that is no bus
    subject: reading its entry fails every time."""
    await store.js.publish(
        s.msg_subject(qid, BUCKET), b"\r\nbody\r\n", stream=s.QUEUE_STREAM,
        headers={ENTRY_HEADER: QueueEntry(qid, "a@client.test", [Recipient("x@remote.test")],
                                          queue="hold").encode().decode()},
    )
    status = {"queue_id": "no such id", "attempt": 0, "transport": "smtp", "nexthop": "x",
              "results": [{"index": 0, "status": "sent", "dsn": "2.0.0", "reason": "ok"}]}
    await store.js.publish(s.status_subject(qid), versioned(status), stream=s.WORK_STREAM)


async def undecodable_wakeup(store: Bus, qid: str) -> None:
    await store.js.publish(s.wake_subject(qid), b'{"queue_id": 7}', stream=s.QUEUE_STREAM)


KINDS = {
    # name: (publish, kind, durable, stream, subject, deliveries, reason)
    "undecodable trigger": (undecodable_trigger, "message", s.QMGR_INCOMING_CONSUMER,
                            s.QUEUE_STREAM, in_bucket, 1, "not JSON"),
    "trigger that raises": (trigger_that_raises, "message", s.QMGR_INCOMING_CONSUMER,
                            s.QUEUE_STREAM, in_bucket, LIMIT,
                            f"failed {LIMIT} times: BadSubjectError"),
    "undecodable status": (undecodable_status, "status", s.QMGR_STATUS_CONSUMER,
                           s.WORK_STREAM, s.status_subject, 1, "not JSON"),
    "status that raises": (status_that_raises, "status", s.QMGR_STATUS_CONSUMER,
                           s.WORK_STREAM, s.status_subject, LIMIT,
                           f"failed {LIMIT} times: BadSubjectError"),
    "undecodable wake-up": (undecodable_wakeup, "wakeup", s.QMGR_WAKE_CONSUMER,
                            s.QUEUE_STREAM, s.wake_subject, 1, "bad wake-up"),
}
NOUNS = {"message": "queue file", "status": "delivery status", "wakeup": "wake-up"}


@pytest.mark.parametrize("case", list(KINDS))
async def test_poison_ends_in_the_corrupt_queue_once(
    case: str, strict_qmgr: Qmgr, store: Bus
) -> None:
    qmgr = strict_qmgr
    publish, kind, durable, stream, subject_of, deliveries, reason = KINDS[case]
    qid = new_queue_id()
    live = 1 if case == "status that raises" else 0  # its held message stays queued
    await publish(store, qid)

    found = await corrupt_record(store, qid)
    assert (found.kind, found.subject, found.deliveries) == (kind, subject_of(qid), deliveries)
    assert reason in found.reason
    await settled(store, stream, durable, subject_of(qid))
    if kind == "message":  # the queue file itself moved: nothing of it is live queue work
        left = await store.js.stream_info(s.QUEUE_STREAM, subjects_filter=s.message_filter(qid))
        assert not left.state.subjects
        assert found.sender == "alice@client.test" or case == "undecodable trigger"
    line = f'{qid}: saving corrupt {NOUNS[kind]} from {subject_of(qid)} to queue "corrupt": '
    [logged] = qmgr.lines(line)
    assert logged.split("]: ", 1)[1].startswith(f"warning: {line}{reason}")
    sample = f'postbus_corrupt_messages_total{{kind="{kind}"}}'
    await wait_for(lambda: asyncio.to_thread(lambda: qmgr.metric(sample) == 1.0), sample)
    retries = qmgr.lines(f"{qid}: {durable}: cannot handle {subject_of(qid)}")
    assert len(retries) == deliveries - 1

    listing = (await asyncio.to_thread(postbus, qmgr.conf, "postqueue", "-p")).stdout
    lines = listing.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{qid}? "))
    assert lines[at + 1].strip().startswith(f"(corrupt {NOUNS[kind]}: {reason}")
    assert lines[-1].endswith(" in 1 Request." if not live else " in 2 Requests.")
    listed = (await asyncio.to_thread(postbus, qmgr.conf, "postqueue", "-j")).stdout
    js = json.loads(listed.splitlines()[-1])  # after the live messages
    assert (js["queue_name"], js["queue_id"], js["corrupt_kind"]) == ("corrupt", qid, kind)

    result = await asyncio.to_thread(postbus, qmgr.conf, "postsuper", "-d", qid)
    assert f"postsuper: Deleted: {1 + live} message" in result.stderr
    assert await corrupt.corrupt_messages(store.js) == []
    empty = await asyncio.to_thread(postbus, qmgr.conf, "postqueue", "-p")
    assert empty.stdout == "Mail queue is empty\n"


async def test_postsuper_d_all_leaves_corrupt_unless_named(
    strict_qmgr: Qmgr, store: Bus
) -> None:
    qmgr = strict_qmgr
    first, second = new_queue_id(), new_queue_id()
    for qid in (first, second):
        await undecodable_status(store, qid)
    for qid in (first, second):
        await corrupt_record(store, qid)
    result = await asyncio.to_thread(postbus, qmgr.conf, "postsuper", "-d", "ALL")
    assert "postsuper: Deleted: 0 messages" in result.stderr
    assert len(await corrupt.corrupt_messages(store.js)) == 2
    result = await asyncio.to_thread(postbus, qmgr.conf, "postsuper", "-d", first, "corrupt")
    assert "postsuper: Deleted: 1 message\n" in result.stderr
    assert [m.record_id for m in await corrupt.corrupt_messages(store.js)] == [second]
    result = await asyncio.to_thread(postbus, qmgr.conf, "postsuper", "-d", "ALL", "corrupt")
    assert "postsuper: Deleted: 1 message\n" in result.stderr
    assert await corrupt.corrupt_messages(store.js) == []


async def test_unreadable_wakeup_does_not_strand_its_deferred_message(
    strict_qmgr: Qmgr, store: Bus
) -> None:
    qid = await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient("x@remote.test")]),
                                    b"\r\nbody\r\n")
    got = await store.queue.get(qid)
    assert got is not None
    # As if the qmgr had deferred it far into the future (a timer set for then)...
    entry, revision = got
    entry.queue, entry.next_attempt = "deferred", time.time() + 3600
    for rcpt in entry.recipients:
        rcpt.state, rcpt.reason = "deferred", "try later"
    await store.queue.update(entry, revision)
    # ... and a damaged wake-up arrives: it is moved, and the message gets its timer
    # again, for the time its entry names, not at once.
    await store.js.publish(s.wake_subject(qid), b"\xff", stream=s.QUEUE_STREAM)
    await corrupt_record(store, qid)

    async def timer() -> bool:
        info = await store.js.stream_info(s.QUEUE_STREAM,
                                          subjects_filter=f"{s.ROOT}.q.*.*.{qid}.timer")
        return bool(info.state.subjects)

    await wait_for(timer, "a new timer")
    msg = await store.js.get_last_msg(s.QUEUE_STREAM, f"{s.ROOT}.q.*.*.{qid}.timer")
    assert (msg.headers or {})["Nats-Schedule-Target"] == s.wake_subject(qid)
    at = (msg.headers or {})["Nats-Schedule"].removeprefix("@at ")
    when = datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert entry.next_attempt <= when <= entry.next_attempt + 1
    got = await store.queue.get(qid)
    assert got is not None and got[0].queue == "deferred"


# -- lookup tables that cannot answer -------------------------------------------------


async def test_redis_down_while_routing_defers_with_4_3_0_then_delivers(
    tmp_path: Path, nats: ServerProcess, redis: ServerProcess, store: Bus
) -> None:
    table = tmp_path / "transport"
    table.write_text("routed.test relay:[10.9.9.9]\n")
    started, proc = start_qmgr(tmp_path, (
        f"postbus_nats_url = {nats.url}\npostbus_redis_url = {redis.url}/0\n"
        f"transport_maps = hash:{table}\n"
    ))
    try:
        made = await asyncio.to_thread(postbus, started.conf, "postmap", f"hash:{table}")
        assert made.returncode == 0, made.stderr
        redis.stop()
        qid = await store.queue.enqueue(
            QueueEntry("", "a@client.test", [Recipient("u@routed.test")]), b"\r\nbody\r\n"
        )

        async def deferred() -> QueueEntry | None:
            got = await store.queue.get(qid)
            ok = got and got[0].queue == "deferred" and got[0].recipients[0].dsn == "4.3.0"
            return got[0] if got and ok else None

        entry = await wait_for(deferred, "a 4.3.0 deferral")
        assert isinstance(entry, QueueEntry)
        assert entry.recipients[0].reason == "address resolver failure"
        assert entry.next_attempt > entry.last_attempt  # backoff, not a bus redelivery
        async def logged() -> list[str]:
            return started.lines(f"{qid}: transport_maps lookup failure: ")

        [warning, *_] = await wait_for(logged, "the lookup failure in the log")  # type: ignore[misc]
        assert f"warning: {qid}: transport_maps lookup failure: hash:{table}: redis: " in warning
        assert started.lines("saving corrupt") == []

        await asyncio.to_thread(redis.start)
        sub = await store.js.pull_subscribe(s.deliver_filter("relay"), durable="deliver-relay",
                                            stream=s.WORK_STREAM)
        [msg] = await sub.fetch(1, timeout=30)
        await msg.ack()
        job = WorkBus.read_job(msg)
        assert (job.queue_id, job.nexthop) == (qid, "[10.9.9.9]") and job.attempt >= 2
        await store.work.report(DeliveryStatus(
            qid, job.attempt, "relay", job.nexthop, [RcptResult(0, "sent", "2.0.0", "250 ok")],
            attempt_id=job.attempt_id, token=job.token, whole=job.whole))

        async def gone() -> bool:
            return await store.queue.get(qid) is None

        await wait_for(gone, f"{qid} delivered and removed")
    finally:
        proc.terminate()
        proc.wait(10)
