"""The event stream on a real nats-server: durable, limited as configured, never in the way
of mail; what postsuper records; what `postbus events` shows."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from postbus import events
from postbus.bus import subjects as s
from postbus.bus.jetstream import connect, ensure_streams
from postbus.config.loader import Config
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, Recipient
from postbus.servers import ServerProcess, nats_server

pytestmark = pytest.mark.integration

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"


def postbus(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
        capture_output=True, text=True, timeout=60,
    )


async def test_events_survive_a_nats_restart_and_keep_the_configured_limits(
        tmp_path: Path) -> None:
    """A file stream: a recorded event is still there after nats-server restarts;
    an old memory stream is replaced, and main.cf's limits are applied."""
    server = nats_server(tmp_path / "nats").start()
    try:
        nc = await connect(server.url, "test")
        js = nc.jetstream()
        await js.add_stream(StreamConfig(  # what earlier versions declared
            name=s.EVENTS_STREAM, subjects=[s.EVENT_SUBJECTS], storage=StorageType.MEMORY,
            retention=RetentionPolicy.LIMITS, max_age=3600.0))
        await ensure_streams(js)
        cfg = Config.from_text("postbus_events_max_age = 2d\npostbus_events_max_bytes = 5000000\n"
                               "postbus_events_max_msgs = 0\n")
        await events.ensure_stream(js, cfg)
        info = await js.stream_info(s.EVENTS_STREAM)
        assert (info.config.storage, info.config.max_age, info.config.max_bytes,
                info.config.max_msgs) == (StorageType.FILE, 172800.0, 5000000, -1)
        event = events.make("delivered", "4BCD50", recipient="bob@example.com", dsn="2.0.0")
        assert await events.publish(nc, event)
        await nc.close()
        server.stop()
        server.start()
        nc = await connect(server.url, "test")
        msg = await nc.jetstream().get_last_msg(s.EVENTS_STREAM, "postbus.event.delivered")
        assert events.decode(msg.data) == event
        await nc.close()
    finally:
        server.stop()


async def test_a_failure_to_record_is_logged_and_counted_never_raised(
        nats: ServerProcess, caplog: pytest.LogCaptureFixture) -> None:
    from postbus import metrics

    nc = await connect(nats.url, "test")
    try:
        # no stream yet: JetStream has nobody to answer for postbus.event.*
        before = metrics.events_failed.labels("received")._value.get()
        assert await events.publish_event(nc, "incoming", "4BCD51", size=10, nrcpt=1) is False
        assert metrics.events_failed.labels("received")._value.get() == before + 1
        assert "4BCD51: cannot record event received:" in caplog.text
        await ensure_streams(nc.jetstream())
        assert await events.publish_event(nc, "incoming", "4BCD51", size=10, nrcpt=1) is True
    finally:
        await nc.close()


async def test_the_recorder_checks_every_acknowledgement_without_waiting_for_each(
        nats: ServerProcess, caplog: pytest.LogCaptureFixture) -> None:
    """Roles record in the background (postbus.events_recorder): each event is
    acknowledged by JetStream or logged and counted, and a burst keeps its order."""
    from postbus import metrics
    from postbus.events_recorder import EventRecorder

    nc = await connect(nats.url, "test")
    try:
        recorder = EventRecorder(nc)
        failed = metrics.events_failed.labels("active")._value.get()
        recorder.record(events.make("active", "4BCD52", attempt=1))  # no stream yet
        await asyncio.wait_for(recorder.drain(), 15)
        assert metrics.events_failed.labels("active")._value.get() == failed + 1
        assert "4BCD52: cannot record event active: no responders" in caplog.text
        await ensure_streams(nc.jetstream())
        published = metrics.events_published.labels("active")._value.get()
        for attempt in range(1, 2501):  # more than the window of unacknowledged events
            recorder.record(events.make("active", "4BCD53", attempt=attempt))
        recorder.record(None)
        await asyncio.wait_for(recorder.drain(), 30)
        assert metrics.events_published.labels("active")._value.get() == published + 2500
        info = await nc.jetstream().stream_info(s.EVENTS_STREAM)
        assert info.state.messages == 2500
        first = await nc.jetstream().get_msg(s.EVENTS_STREAM, info.state.first_seq)
        last = await nc.jetstream().get_msg(s.EVENTS_STREAM, info.state.last_seq)
        assert [events.decode(m.data).attempt for m in (first, last)] == [1, 2500]  # type: ignore[attr-defined]
        assert metrics.events_failed.labels("active")._value.get() == failed + 1
    finally:
        await nc.close()


async def test_postsuper_records_who_held_released_and_deleted(
        qmgr: Path, store: Bus) -> None:
    conf = qmgr.parent / "etc"
    qid = await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient("y@later.test")]),
                              b"\r\nbody\r\n")
    for _ in range(200):
        got = await store.queue.get(qid)
        if got and got[0].queue == "deferred":
            break
        await asyncio.sleep(0.05)
    for args in (("-h", qid), ("-H", qid), ("-d", qid)):
        assert (await asyncio.to_thread(postbus, conf, "postsuper", *args)).returncode == 0
    out = await asyncio.to_thread(postbus, conf, "events", "--since", "all", "--no-follow",
                                  "-i", qid, "-j")
    assert out.returncode == 0, out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [e["kind"] for e in got]
    # active is not recorded by default (postbus_events_record)
    assert kinds[:2] == ["received", "deferred"], kinds
    admin = [e for e in got if e["kind"] in ("held", "released", "deleted")]
    assert [(e["kind"], e["why"]) for e in admin] == [
        ("held", "postsuper -h"), ("released", "postsuper -H"), ("deleted", "postsuper -d")]
    assert all(e["who"] and e["queue_id"] == qid for e in admin)
    assert kinds[-1] == "deleted"
    human = await asyncio.to_thread(postbus, conf, "events", "--since", "10m", "--no-follow",
                                    "-i", qid, "--kind", "held,deleted")
    lines = human.stdout.splitlines()
    assert len(lines) == 2, human
    assert re.fullmatch(rf"{STAMP} {qid}: held by \S+ \(postsuper -h\)", lines[0]), lines
    assert re.fullmatch(rf"{STAMP} {qid}: deleted by \S+ \(postsuper -d\)", lines[1]), lines
