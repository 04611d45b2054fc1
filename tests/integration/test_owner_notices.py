"""A running qmgr sends a recipient's non-delivery notice to the owner- alias its local(8)
result names (``bounce_to``), one per recipient as Postfix's bounce_one(), and the other
failed recipients' notice to the sender, as before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, RcptResult, Recipient
from tests.integration.test_qmgr import next_job, status, wait_gone

pytestmark = pytest.mark.integration


async def test_owner_and_sender_each_get_their_recipients_notice(
    qmgr: Path, store: Bus
) -> None:
    qid = await store.queue.enqueue(QueueEntry("", "alice@client.test", [
        Recipient("list@postbus.test"), Recipient("plain@postbus.test"),
        Recipient("quiet@postbus.test", notify="NEVER"),
    ]), b"Subject: owners\r\n\r\nbody\r\n")
    for _ in range(200):  # the job is out: the attempt is running
        if await store.work.in_flight(qid):
            break
        await asyncio.sleep(0.05)
    owner = "owner-list@postbus.test"
    results = {
        0: RcptResult(0, "bounced", "5.1.1", "user unknown", "local", bounce_to=owner),
        1: RcptResult(1, "bounced", "5.1.1", "unknown user: \"plain\"", "local"),
        2: RcptResult(2, "bounced", "5.1.1", "user unknown", "local", bounce_to=owner),
    }
    for _ in results:  # one recipient per local job (local_destination_recipient_limit)
        job = await next_job(store, "local")
        await store.work.report(status(job, [results[i] for i in job.indexes]))
    assert await wait_gone(store, qid)
    to_owner = await next_job(store, "local")  # owner-list@postbus.test is local
    to_sender = await next_job(store, "smtp")  # client.test: through the relayhost
    assert [r.address for r in to_owner.recipients] == [owner]
    assert to_owner.sender == to_sender.sender == ""
    assert [r.address for r in to_sender.recipients] == ["alice@client.test"]
    owner_text = (await store.queue.content(to_owner.queue_id, to_owner.chunks)).decode()
    sender_text = (await store.queue.content(to_sender.queue_id, to_sender.chunks)).decode()
    assert "\r\nTo: owner-list@postbus.test\r\n" in owner_text
    assert "<list@postbus.test>: user unknown" in owner_text
    assert "plain@postbus.test" not in owner_text and "quiet@" not in owner_text
    assert "<plain@postbus.test>: unknown user" in sender_text
    assert "list@postbus.test" not in sender_text
    log = qmgr.read_text()
    assert log.count(f"{qid}: sender non-delivery notification: ") == 2, log
