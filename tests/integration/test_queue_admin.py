"""postbus postqueue and postsuper against a real queue (nats-server + qmgr)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, Recipient
from postbus.servers import ServerProcess

pytestmark = pytest.mark.integration


def postbus(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
        capture_output=True, text=True, timeout=60,
    )


async def wait_queue(store: Bus, qid: str, queue: str, timeout: float = 10) -> QueueEntry:
    for _ in range(int(timeout / 0.05)):
        got = await store.queue.get(qid)
        if got and got[0].queue == queue:
            return got[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{qid} never reached {queue}: {await store.queue.get(qid)}")


async def test_postqueue_lists_deferred_mail_with_reason(qmgr: Path, store: Bus) -> None:
    conf = qmgr.parent / "etc"
    empty = await asyncio.to_thread(postbus, conf, "postqueue", "-p")
    assert "Mail queue is empty" in empty.stdout
    entry = QueueEntry("", "alice@client.test", [Recipient("x@later.test")])
    qid = await store.queue.enqueue(entry, b"Subject: t\r\n\r\n" + b"x" * 3000 + b"\r\n")
    await wait_queue(store, qid, "deferred")
    out = (await asyncio.to_thread(postbus, conf, "postqueue", "-p")).stdout
    lines = out.splitlines()
    assert lines[0] == "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    assert lines[1].startswith(f"{qid:<11} ") and lines[1].endswith(" alice@client.test")
    assert lines[2].strip() == "(try again later)" and len(lines[2]) == 76 + 2
    assert lines[3].strip() == "x@later.test"
    assert lines[-1] == "-- 2 Kbytes in 1 Request."
    js = json.loads((await asyncio.to_thread(postbus, conf, "postqueue", "-j")).stdout)
    assert js["queue_name"] == "deferred" and js["queue_id"] == qid
    assert js["recipients"] == [{"address": "x@later.test", "delay_reason": "try again later"}]


async def test_postsuper_hold_release_and_delete(qmgr: Path, store: Bus) -> None:
    conf = qmgr.parent / "etc"
    qid = await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient("y@later.test")]),
                              b"\r\nbody\r\n")
    await wait_queue(store, qid, "deferred")
    result = await asyncio.to_thread(postbus, conf, "postsuper", "-h", qid)
    assert "postsuper: Placed on hold: 1 message" in result.stderr
    await wait_queue(store, qid, "hold")
    out = (await asyncio.to_thread(postbus, conf, "postqueue", "-p")).stdout
    assert f"{qid}!" in out
    result = await asyncio.to_thread(postbus, conf, "postsuper", "-H", "ALL")
    assert "postsuper: Released from hold: 1 message" in result.stderr
    entry = await wait_queue(store, qid, "deferred")
    assert entry.attempts >= 2  # released mail was tried again at once
    result = await asyncio.to_thread(postbus, conf, "postsuper", "-d", "ALL", "deferred")
    assert "postsuper: Deleted: 1 message" in result.stderr
    assert await store.queue.get(qid) is None
    left = await store.js.stream_info("POSTBUS_QUEUE", subjects_filter=f"postbus.q.{qid}.>")
    assert not left.state.subjects  # entry, content and timer (fired wake-ups expire)


async def test_incoming_mail_is_listed_and_can_be_held_and_deleted_before_qmgr_sees_it(
    tmp_path: Path, nats: ServerProcess, store: Bus
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(f"postbus_nats_url = {nats.url}\n")
    (conf / "master.cf").write_text("")
    qid = await store.queue.enqueue(
        QueueEntry("", "early@client.test", [Recipient("x@remote.test")]), b"\r\nbody\r\n"
    )
    out = (await asyncio.to_thread(postbus, conf, "postqueue", "-p")).stdout
    assert f"{qid} " in out and "early@client.test" in out and f"{qid}*" not in out
    result = await asyncio.to_thread(postbus, conf, "postsuper", "-h", qid)
    assert "Placed on hold: 1 message" in result.stderr
    got = await store.queue.get(qid)
    assert got is not None and got[0].queue == "hold" and got[1] > 0
    result = await asyncio.to_thread(postbus, conf, "postsuper", "-d", qid)
    assert "Deleted: 1 message" in result.stderr
    assert await store.queue.get(qid) is None


async def test_queue_gauges_count_deferred_and_held_mail(qmgr: Path, store: Bus) -> None:
    port = int((qmgr.parent / "metrics.port").read_text())
    for _ in range(200):  # the recount of a new queue is done (see postbus.queue.gauges)
        if "recounted the queue" in qmgr.read_text():
            break
        await asyncio.sleep(0.05)
    deferred = await store.queue.enqueue(
        QueueEntry("", "a@client.test", [Recipient("x@later.test")]), b"\r\nbody\r\n"
    )
    held = await store.queue.enqueue(
        QueueEntry("", "a@client.test", [Recipient("y@later.test")]), b"\r\nbody\r\n"
    )
    await wait_queue(store, deferred, "deferred")
    await wait_queue(store, held, "deferred")
    conf = qmgr.parent / "etc"
    await asyncio.to_thread(postbus, conf, "postsuper", "-h", held)

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        found = re.findall(r'^postbus_queue_messages\{queue="(\w+)"\} ([\d.]+)$', text, re.M)
        return {name: float(value) for name, value in found}

    for _ in range(60):
        gauges = await asyncio.to_thread(scrape)
        if gauges.get("deferred") == 1 and gauges.get("hold") == 1:
            break
        await asyncio.sleep(0.2)
    assert gauges["deferred"] == 1 and gauges["hold"] == 1, gauges
    assert gauges["incoming"] == 0 and gauges["active"] == 0
