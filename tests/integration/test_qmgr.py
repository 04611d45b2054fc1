"""qmgr against a real nats-server: jobs out, results in, defer, bounce, remove."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from postbus.bus import subjects as s
from postbus.queue.admin import Bus
from postbus.queue.entry import DeliveryJob, DeliveryStatus, QueueEntry, RcptResult, Recipient
from postbus.queue.work import WorkBus
from postbus.servers import ServerProcess
from tests.integration.conftest import running_qmgr

pytestmark = pytest.mark.integration


async def next_job(store: Bus, transport: str, timeout: float = 10) -> DeliveryJob:
    sub = await store.js.pull_subscribe(
        s.deliver_filter(transport), durable=s.deliver_consumer(transport), stream=s.WORK_STREAM
    )
    msgs = await sub.fetch(1, timeout=timeout)
    await msgs[0].ack()
    return WorkBus.read_job(msgs[0])


def status(job: DeliveryJob, results: list[RcptResult]) -> DeliveryStatus:
    """What an agent reports for ``job``."""
    return DeliveryStatus(job.queue_id, job.attempt, job.transport, job.nexthop, results,
                          attempt_id=job.attempt_id, token=job.token, whole=job.whole)


async def wait_queue(store: Bus, qid: str, queue: str, timeout: float = 10) -> QueueEntry:
    for _ in range(int(timeout / 0.05)):
        got = await store.queue.get(qid)
        if got is not None and got[0].queue == queue:
            return got[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{qid} never reached {queue}: {await store.queue.get(qid)}")


async def wait_gone(store: Bus, qid: str, timeout: float = 10) -> bool:
    for _ in range(int(timeout / 0.05)):
        if await store.queue.get(qid) is None:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_jobs_grouped_by_nexthop_and_removed_when_all_sent(
    qmgr: Path, store: Bus
) -> None:
    entry = QueueEntry("", "alice@client.test", [
        Recipient("bob@postbus.test"), Recipient("x@remote.test"), Recipient("y@remote.test"),
    ])
    qid = await store.queue.enqueue(entry, b"Subject: t\r\n\r\nbody\r\n")
    for _ in range(200):  # the jobs are out: the attempt is running
        if await store.work.in_flight(qid):
            break
        await asyncio.sleep(0.05)
    assert await store.work.in_flight(qid)
    local = await next_job(store, "local")
    remote = await next_job(store, "smtp")
    assert local.nexthop == "mail.postbus.test" and local.indexes == [0]
    assert remote.nexthop == "[127.0.0.1]:2526" and remote.indexes == [1, 2]
    assert remote.attempt == 1 and remote.queue_id == qid
    assert local.attempt_id == remote.attempt_id and local.token == remote.token != ""
    for job in (local, remote):
        await store.work.report(status(job, [
            RcptResult(i, "sent", "2.0.0", "250 ok") for i in job.indexes
        ]))
    assert await wait_gone(store, qid)
    for _ in range(200):  # logged just after the done mark is stored
        if f"{qid}: removed" in qmgr.read_text():
            break
        await asyncio.sleep(0.05)
    assert f"{qid}: removed" in qmgr.read_text()


async def test_deferred_recipient_is_retried_with_a_new_attempt(
    qmgr: Path, store: Bus
) -> None:
    qid = await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient("x@remote.test")]),
                              b"\r\nbody\r\n")
    job = await next_job(store, "smtp")
    await store.work.report(status(job, [
        RcptResult(0, "deferred", "4.4.1", "connect to x: Connection refused")
    ]))
    retry = await next_job(store, "smtp")
    assert retry.attempt == 2 and retry.indexes == [0]
    assert retry.attempt_id != job.attempt_id
    got = await store.queue.get(qid)
    assert got is not None and got[0].queue == "active"
    assert got[0].recipients[0].reason == "connect to x: Connection refused"
    await store.work.report(status(retry, [
        RcptResult(0, "deferred", "4.4.1", "connect to x: Connection refused")
    ]))
    third = await next_job(store, "smtp")  # minimal_backoff_time = 1s
    assert third.attempt == 3 and third.attempt_id not in (job.attempt_id, retry.attempt_id)


async def test_error_and_discard_transports_settle_without_agents(
    qmgr: Path, store: Bus
) -> None:
    qid = await store.queue.enqueue(
        QueueEntry(
            "", "alice@postbus.test", [Recipient("u@blocked.test"), Recipient("v@gone.test")]
        ),
        b"Subject: t\r\n\r\nbody\r\n",
    )
    assert await wait_gone(store, qid)
    bounce = await next_job(store, "local")  # the bounce to alice@postbus.test
    assert bounce.sender == "" and bounce.recipients[0].address == "alice@postbus.test"
    content = await store.queue.content(bounce.queue_id, bounce.chunks)
    assert b"Status: 5.7.1" in content and b"no mail here" in content
    assert b"Final-Recipient: rfc822; u@blocked.test" in content
    assert b"v@gone.test" not in content.split(b"Delivery report")[1].split(b"Undelivered")[0]


async def test_relocated_recipient_that_got_past_smtpd_bounces_naming_the_original(
    qmgr: Path, store: Bus
) -> None:
    """relocated_maps is trivial-rewrite's: mail queued without smtpd's check (sendmail,
    a forward) bounces with 5.1.6; the DSN names the recipient as it was before
    cleanup rewrote it (Recipient.orig_rcpt)."""
    qid = await store.queue.enqueue(
        QueueEntry("", "alice@postbus.test",
                   [Recipient("moved@postbus.test", orig_rcpt="old-name@postbus.test")]),
        b"Subject: t\r\n\r\nbody\r\n",
    )
    assert await wait_gone(store, qid)
    bounce = await next_job(store, "local")
    content = await store.queue.content(bounce.queue_id, bounce.chunks)
    assert (b"<moved@postbus.test> (expanded from <old-name@postbus.test>): User has moved to"
            b"\r\n    moved@new.example\r\n") in content  # as bounce(8) words and wraps it
    assert b"Final-Recipient: rfc822; moved@postbus.test\r\n" \
           b"Original-Recipient: rfc822;old-name@postbus.test\r\n" in content
    assert b"Status: 5.1.6" in content


async def test_main_cf_change_is_picked_up_and_a_bad_one_is_refused(
    qmgr: Path, store: Bus
) -> None:
    main_cf = qmgr.parent / "etc" / "main.cf"
    text = main_cf.read_text()
    main_cf.write_text(text + "relayhost = [127.0.0.2]:2599\n")
    for _ in range(100):
        if "reload -- configuration" in qmgr.read_text():
            break
        await asyncio.sleep(0.1)
    qid = await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient("x@remote.test")]),
                              b"\r\nbody\r\n")
    job = await next_job(store, "smtp")
    assert job.queue_id == qid and job.nexthop == "[127.0.0.2]:2599"
    main_cf.write_text(text + "relayhost = [127.0.0.2]:2599\nmessage_size_limit = lots\n")
    for _ in range(100):
        if "keeping the last good configuration" in qmgr.read_text():
            break
        await asyncio.sleep(0.1)
    log = qmgr.read_text()
    assert "message_size_limit" in log and "keeping the last good configuration" in log
    qid = await store.queue.enqueue(QueueEntry("", "a@client.test", [Recipient("y@remote.test")]),
                              b"\r\nbody\r\n")
    job = await next_job(store, "smtp")
    assert job.queue_id == qid and job.nexthop == "[127.0.0.2]:2599"


async def test_triggers_handed_out_again_after_a_restart_are_read_against_the_queue(
    tmp_path: Path, nats: ServerProcess, redis: ServerProcess, store: Bus
) -> None:
    """After a kill -9 of nats-server, JetStream may hand out as new a trigger that
    was acknowledged (it writes acks to disk a little later). A qmgr reads every
    trigger older than its start or the restart against the queue: one marked done
    is not delivered again, one with an entry of its own is left to that entry;
    new mail goes on. (A fresh qmgr-incoming consumer hands out every trigger as
    new, as one that lost its acks does.)"""
    queue = store.queue
    body = b"Subject: t\r\n\r\nbody\r\n"
    done = await queue.enqueue(QueueEntry("", "a@client.test", [Recipient("d@remote.test")]),
                               body)
    got = await queue.get(done)
    assert got is not None
    await queue.remove(done, bucket=got[0].bucket)
    later = await queue.enqueue(QueueEntry("", "a@client.test", [Recipient("l@remote.test")]),
                                body)
    got = await queue.get(later)
    assert got is not None
    got[0].queue, got[0].next_attempt = "deferred", time.time() + 3600
    await queue.update(*got)
    new = await queue.enqueue(QueueEntry("", "a@client.test", [Recipient("n@remote.test")]),
                              body)
    with running_qmgr(tmp_path, nats, redis) as log:
        job = await next_job(store, "smtp")
        assert job.queue_id == new
        await store.work.report(status(job, [RcptResult(0, "sent", "2.0.0", "250 ok")]))
        assert await wait_gone(store, new)
        assert not await store.work.in_flight(done)
        assert not await store.work.in_flight(later)
        text = log.read_text()
        assert f"{new}: from=<a@client.test>" in text
        assert f"{done}: from=" not in text and f"{later}: from=" not in text
        assert (await wait_queue(store, later, "deferred")).attempts == 0
        assert await queue.get(done) is None
