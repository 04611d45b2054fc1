"""postqueue -p / -j and postsuper ... ALL over the whole queue, streamed and complete.

The listing used to stop at 100,000 messages (STREAM.INFO's subject list);
the big test queues 120,000 and checks that every one is listed, that the
first line comes within a second, and that postsuper -d ALL deletes all.
Its nats-server does not fsync each write (what is checked is the listing,
not durability), so filling the queue takes a second or two.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from postbus.bus import subjects as s
from postbus.bus.jetstream import connect, ensure_streams
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.file import QueueFile
from postbus.queue.listing import taken
from postbus.servers import ServerProcess, nats_server
from tests.integration.queue_fill import fill, nats_without_fsync

pytestmark = pytest.mark.integration

BIG = 120_000
LISTED = re.compile(r"^([0-9A-Z]{11})([*!]?) ", re.M)


def postbus(conf: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
        capture_output=True, text=True, timeout=120, input=stdin,
    )


def write_conf(path: Path, nats: ServerProcess, extra: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.cf").write_text(
        f"postbus_nats_url = {nats.url}\nmaillog_file = {path / 'maillog'}\n{extra}")
    (path / "master.cf").write_text("")
    return path


@pytest.fixture
def fast_nats(tmp_path: Path) -> Iterator[ServerProcess]:
    server = nats_without_fsync(nats_server(tmp_path / "nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def bus_nc(fast_nats: ServerProcess) -> AsyncIterator[NATS]:
    nc = await connect(fast_nats.url, "test")
    await ensure_streams(nc.jetstream())
    yield nc
    await nc.close()


def stream_listing(conf: Path, *args: str) -> tuple[float, float, list[str]]:
    """Run postqueue, reading its output as it comes: (seconds to the first
    message listed, seconds to the last line, every line)."""
    start = time.monotonic()
    first_after = 0.0
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), "postqueue", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if not first_after and (LISTED.match(line) or line.startswith("{")):
                first_after = time.monotonic() - start
            lines.append(line)
        last_after = time.monotonic() - start
        assert proc.wait(120) == 0, proc.stderr.read()
    return first_after, last_after, lines


@pytest.mark.big
async def test_postqueue_and_postsuper_all_reach_past_100000_messages(
    tmp_path: Path, fast_nats: ServerProcess, bus_nc: NATS
) -> None:
    ids = await fill(bus_nc, BIG)
    conf = write_conf(tmp_path / "etc", fast_nats)

    first_after, last_after, lines = await asyncio.to_thread(stream_listing, conf, "-p")
    # streamed: the first message long before the last, not after a scan of everything
    # (how soon on a quiet box is bench/queue_bench.py's figure: 0.2 s for the first line)
    assert 0 < first_after < last_after / 4, f"{first_after:.2f}s of {last_after:.2f}s"
    assert lines[0] == "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
    listed = LISTED.findall("".join(lines))
    assert len(listed) == BIG and {qid for qid, _ in listed} == set(ids)
    assert lines[-1] == f"-- {BIG * 25 // 1024} Kbytes in {BIG} Requests.\n"

    first_json, last_json, json_lines = await asyncio.to_thread(stream_listing, conf, "-j")
    assert 0 < first_json < last_json / 4, f"{first_json:.2f}s of {last_json:.2f}s"
    assert len(json_lines) == BIG and '"queue_id": "B0000000000"' in "".join(json_lines[:BIG])

    deleted = await asyncio.to_thread(postbus, conf, "postsuper", "-d", "ALL")
    assert deleted.stderr.splitlines()[-1] == f"postsuper: Deleted: {BIG} messages"
    assert [e async for e in QueueFile(bus_nc, bus_nc.jetstream()).entries()] == []


async def test_written_entries_win_and_each_message_is_listed_once(
    bus_nc: NATS, tmp_path: Path, fast_nats: ServerProcess
) -> None:
    """A message with a written entry is listed from it (held: ``!``), never also
    as received; the others as received."""
    queue = QueueFile(bus_nc, bus_nc.jetstream())
    ids = await fill(bus_nc, 50)
    for qid in ids[:10]:
        await queue.modify(qid, lambda e: setattr(e, "queue", "hold") or True)
    conf = write_conf(tmp_path / "etc", fast_nats)
    out = (await asyncio.to_thread(postbus, conf, "postqueue", "-p")).stdout
    listed = dict(LISTED.findall(out))
    assert len(LISTED.findall(out)) == 50 and set(listed) == set(ids)
    assert {qid for qid, mark in listed.items() if mark == "!"} == set(ids[:10])
    assert out.endswith("-- 1 Kbytes in 50 Requests.\n")


async def test_a_message_the_qmgr_has_taken_is_listed_active(
    bus_nc: NATS, tmp_path: Path, fast_nats: ServerProcess
) -> None:
    """Its entry was never written, but the qmgr-incoming consumer holds its
    trigger: ``ID*``, as showq shows a message in active/. Once acked (the
    attempt over) it is no longer active."""
    js = bus_nc.jetstream()
    (first, second) = await fill(bus_nc, 2)
    sub = await js.pull_subscribe(s.MSG_TRIGGER_FILTER, durable=s.QMGR_INCOMING_CONSUMER,
                                  stream=s.QUEUE_STREAM)
    (msg,) = await sub.fetch(1)
    assert s.queue_id_of(msg.subject) == first
    conf = write_conf(tmp_path / "etc", fast_nats)
    out = (await asyncio.to_thread(postbus, conf, "postqueue", "-p")).stdout
    assert dict(LISTED.findall(out)) == {first: "*", second: ""}
    js_out = (await asyncio.to_thread(postbus, conf, "postqueue", "-j")).stdout
    assert f'"queue_name": "active", "queue_id": "{first}"' in js_out
    assert f'"queue_name": "incoming", "queue_id": "{second}"' in js_out
    await msg.ack_sync()
    assert not (await taken(js)).active(msg.metadata.sequence.stream)


async def test_postsuper_all_changes_every_message_in_the_named_queues(
    bus_nc: NATS, tmp_path: Path, fast_nats: ServerProcess
) -> None:
    queue = QueueFile(bus_nc, bus_nc.jetstream())
    ids = await fill(bus_nc, 3000)
    conf = write_conf(tmp_path / "etc", fast_nats)
    held = await asyncio.to_thread(postbus, conf, "postsuper", "-h", "ALL")
    assert held.stderr.splitlines()[-1] == "postsuper: Placed on hold: 3000 messages"
    entries = {e.queue_id: e.queue async for e in queue.entries()}
    assert set(entries) == set(ids) and set(entries.values()) == {"hold"}
    names = "\n".join(ids[:1000]) + "\n"
    released = await asyncio.to_thread(postbus, conf, "postsuper", "-H", "-", stdin=names)
    assert released.stderr.splitlines()[-1] == "postsuper: Released from hold: 1000 messages"
    gone = await asyncio.to_thread(postbus, conf, "postsuper", "-d", "ALL", "deferred")
    assert gone.stderr.splitlines()[-1] == "postsuper: Deleted: 1000 messages"
    left = {e.queue_id: e.queue async for e in queue.entries()}
    assert set(left) == set(ids[1000:]) and set(left.values()) == {"hold"}
    again = await asyncio.to_thread(postbus, conf, "postsuper", "-d", ids[1000], "deferred")
    assert again.stderr.splitlines()[-1] == "postsuper: Deleted: 0 messages"  # it is on hold
    missing = await asyncio.to_thread(postbus, conf, "postsuper", "-d", "NOSUCHID0000")
    assert missing.stderr.splitlines()[-1] == "postsuper: Deleted: 0 messages"


async def test_listing_of_an_empty_queue(
    bus_nc: NATS, tmp_path: Path, fast_nats: ServerProcess
) -> None:
    conf = write_conf(tmp_path / "etc", fast_nats)
    started = time.monotonic()
    out = await asyncio.to_thread(postbus, conf, "postqueue", "-p")
    assert out.stdout == "Mail queue is empty\n" and out.returncode == 0
    assert time.monotonic() - started < 10  # no waiting on idle timeouts
    assert (await asyncio.to_thread(postbus, conf, "postqueue", "-j")).stdout == ""


async def test_postqueue_when_nats_is_down(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text("postbus_nats_url = nats://127.0.0.1:9\n")
    (conf / "master.cf").write_text("")
    out = await asyncio.to_thread(postbus, conf, "postqueue", "-p")
    assert out.returncode == 69
    assert out.stderr.startswith(
        "postqueue: fatal: Queue report unavailable - mail system is down (connect to NATS")
    flush = await asyncio.to_thread(postbus, conf, "postqueue", "-f")
    assert flush.returncode == 69
    assert flush.stderr == "postqueue: fatal: Cannot flush mail queue - mail system is down\n"


async def test_store_fixture_still_lists(store: Bus) -> None:
    """entries() on the ordinary (fsynced) test server: one enqueued message."""
    qid = await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient("b@x.test")]),
                                    b"\r\nbody\r\n")
    assert [e.queue_id async for e in store.queue.entries()] == [qid]
