"""A message cleanup queued on hold (a HOLD action of header/body checks) is left
alone by the qmgr until ``postsuper -H`` releases it, as Postfix's hold queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, Recipient
from tests.integration.test_queue_admin import postbus, wait_queue

pytestmark = pytest.mark.integration


async def test_held_on_arrival_waits_for_release(qmgr: Path, store: Bus) -> None:
    conf = qmgr.parent / "etc"
    held = QueueEntry("", "a@client.test", [Recipient("y@later.test")], queue="hold")
    qid = await store.queue.enqueue(held, b"Subject: hold me\r\n\r\nbody\r\n")
    # a message queued after it is taken up: the qmgr has read past the held one
    other = await store.queue.enqueue(
        QueueEntry("", "a@client.test", [Recipient("z@later.test")]), b"\r\nbody\r\n")
    await wait_queue(store, other, "deferred")
    got = await store.queue.get(qid)
    assert got is not None and got[0].queue == "hold" and got[0].attempts == 0
    out = (await asyncio.to_thread(postbus, conf, "postqueue", "-p")).stdout
    assert f"{qid}!" in out
    result = await asyncio.to_thread(postbus, conf, "postsuper", "-H", qid)
    assert "postsuper: Released from hold: 1 message" in result.stderr
    entry = await wait_queue(store, qid, "deferred")
    assert entry.attempts >= 1 and entry.recipients[0].reason == "try again later"
