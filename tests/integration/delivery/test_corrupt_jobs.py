"""Delivery jobs that can never be handled end in the corrupt queue, once."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from delivery_local.__main__ import main
from postbus.bus import subjects as s
from postbus.queue import corrupt
from postbus.queue.corrupt import CorruptMessage
from postbus.queue.entry import DeliveryJob, QueueEntry, Recipient
from postbus.queue.ids import new_queue_id

from .conftest import MESSAGE, Bus, RunAgent

pytestmark = pytest.mark.integration

LIMIT = 3


def _settings(tmp_path: Path) -> dict[str, str]:
    return {
        "myhostname": "mail.postbus.test",
        "mydestination": "$myhostname, postbus.test",
        "mail_spool_directory": f"{tmp_path}/mail/",
        "home_mailbox": "",
        "alias_maps": "",
        "postbus_bus_retry_limit": str(LIMIT),
        "postbus_bus_retry_max_delay": "1s",
    }


def _count() -> float:
    value = REGISTRY.get_sample_value("postbus_corrupt_messages_total", {"kind": "job"})
    return value or 0.0


async def _moved(bus: Bus, match: str, timeout: float = 20) -> CorruptMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found in await corrupt.corrupt_messages(bus.store.js):
            if match in (found.record_id, found.subject):
                return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing moved to the corrupt queue for {match}")


async def _settled(bus: Bus, timeout: float = 20) -> None:
    """The job is neither pending nor in the stream: it will not come again."""
    js = bus.nc.jetstream()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(s.WORK_STREAM, s.deliver_consumer("local"))
        left = await js.stream_info(s.WORK_STREAM, subjects_filter=s.deliver_filter("local"))
        if info.num_ack_pending == 0 and info.num_pending == 0 and left.state.messages == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the job is still on the bus")


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_undecodable_job_is_moved_once(
    bus: Bus, run_agent: RunAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = _count()
    await run_agent(main, "local", _settings(tmp_path))
    qid = new_queue_id()
    await bus.nc.jetstream().publish(s.deliver_subject("local", qid), b"\x00not a job",
                                     stream=s.WORK_STREAM)
    found = await _moved(bus, qid)
    assert (found.kind, found.deliveries) == ("job", 1)
    assert found.reason.startswith("not JSON: ")
    await _settled(bus)
    [line] = _lines(caplog, "saving corrupt delivery job")
    assert line == (f'{qid}: saving corrupt delivery job from postbus.deliver.local.{qid}'
                    f' to queue "corrupt": {found.reason}')
    assert _count() == before + 1
    assert await corrupt.remove(bus.store.js, found.record_id)
    assert await corrupt.corrupt_messages(bus.store.js) == []


async def test_undecodable_job_keeps_the_queue_id_its_subject_names(
    bus: Bus, run_agent: RunAgent, tmp_path: Path
) -> None:
    await run_agent(main, "local", _settings(tmp_path))
    qid = new_queue_id()
    await bus.nc.jetstream().publish(
        s.deliver_subject("local", qid), b'{"v": 1, "queue_id": []}', stream=s.WORK_STREAM,
    )
    found = await _moved(bus, qid)
    assert found.record_id == qid and found.reason.startswith("bad delivery job: ")


async def test_job_that_raises_every_time_is_moved_and_its_recipients_deferred(
    bus: Bus, run_agent: RunAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = _count()
    await run_agent(main, "local", _settings(tmp_path))
    entry = QueueEntry("", "alice@postbus.test", [Recipient("bob@postbus.test")])
    qid = await bus.store.queue.enqueue(entry, MESSAGE)
    got = await bus.store.queue.get(qid)
    assert got is not None
    # one recipient but two indexes: the local agent raises on it every time
    job = DeliveryJob(qid, "local", "mail.postbus.test", "alice@postbus.test",
                      [Recipient("bob@postbus.test")], [0, 1], 1, entry.arrival_time,
                      entry.size, entry.chunks, attempt_id=got[0].attempt_id)
    await bus.store.work.submit_job(job)
    status = await bus.status(qid)
    assert [(r.index, r.status, r.dsn, r.reason) for r in status.results] == [
        (0, "deferred", "4.3.0", "unknown mail transport error")
    ]
    found = await _moved(bus, qid)
    assert (found.kind, found.deliveries, found.sender) == ("job", LIMIT, "alice@postbus.test")
    assert found.reason.startswith(f"failed {LIMIT} times: ValueError: ")
    await _settled(bus)
    assert len(_lines(caplog, f'{qid}: saving corrupt delivery job')) == 1
    assert len(_lines(caplog, f"{qid}: deliver-local: cannot handle")) == LIMIT - 1
    [deferred] = _lines(caplog, f"{qid}: to=<bob@postbus.test>, relay=none")
    assert deferred.endswith(", dsn=4.3.0, status=deferred (unknown mail transport error)")
    assert _count() == before + 1
    assert not (tmp_path / "mail").exists() or not list((tmp_path / "mail").iterdir())
