"""Notices through the real queue: a nats-server, the queue file, and the qmgr."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from postbus.config.loader import Config
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, Recipient
from qmgr.bouncer import Bouncer
from tests.integration.test_qmgr import next_job, wait_gone

pytestmark = pytest.mark.integration

CFG = Config.from_text(
    "myhostname = mail.postbus.test\nnotify_classes = bounce, 2bounce, delay\n"
    "compatibility_level = 3.6\n"
)


def bouncer(store: Bus) -> Bouncer:
    """Wired as the qmgr wires it: enqueue with a builder, content by queue ID."""

    async def enqueue(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        return await store.queue.enqueue(entry, b"", build=build)

    async def content(entry: QueueEntry) -> bytes:
        return await store.queue.content(entry.queue_id, entry.chunks)

    return Bouncer(lambda: CFG, enqueue, content)


async def test_notices_are_queued_under_their_own_ids(store: Bus) -> None:
    body = b"Subject: t\r\n\r\n" + b"x" * 200_000 + b"\r\n"  # more than one chunk
    qid = await store.queue.enqueue(QueueEntry("", "alice@client.test", [
        Recipient("a@remote.test", orig_rcpt="a@remote.test", state="bounced", dsn="5.1.1",
                  reason="User unknown"),
        Recipient("b@remote.test", orig_rcpt="b@remote.test", notify="SUCCESS", state="sent",
                  dsn="2.0.0", reason="250 2.0.0 Ok", relay="mx.remote.test[192.0.2.7]:25"),
        Recipient("c@remote.test", orig_rcpt="c@remote.test", state="deferred", dsn="4.4.1",
                  reason="connect to mx.remote.test[192.0.2.7]:25: Connection refused"),
    ]), body)
    got = await store.queue.get(qid)
    assert got is not None
    original = got[0]
    b = bouncer(store)
    ids = [*await b.failure(original), *await b.delay(original),
           *await b.success(original, [(original.recipients[1], "relayed")])]
    assert len(ids) == 5 and len(set(ids)) == 5
    expected = [
        ("", "alice@client.test", b"Undelivered Mail Returned to Sender"),
        ("double-bounce@mail.postbus.test", "postmaster@mail.postbus.test",
         b"Postmaster Copy: Undelivered Mail"),
        ("", "alice@client.test", b"Delayed Mail (still being retried)"),
        ("double-bounce@mail.postbus.test", "postmaster@mail.postbus.test",
         b"Postmaster Warning: Delayed Mail"),
        ("", "alice@client.test", b"Successful Mail Delivery Report"),
    ]
    for new_id, (sender, rcpt, subject) in zip(ids, expected, strict=True):
        stored = await store.queue.get(new_id)
        assert stored is not None
        notice = stored[0]
        assert (notice.sender, [r.address for r in notice.recipients], notice.bounce_of) == (
            sender, [rcpt], qid)
        text = await store.queue.content(new_id, notice.chunks)
        assert b"Subject: " + subject + b"\r\n" in text
        assert f"\tid {new_id}; ".encode() in text  # Received: names the notice's own ID
        assert notice.message_id.endswith(f".{new_id}@mail.postbus.test>")
        assert f"Message-Id: {notice.message_id}\r\n".encode() in text
        assert f"X-Postbus-Queue-ID: {qid}\r\n".encode() in text
        assert notice.size == len(text)
    # the 200 kB body is past bounce_size_limit: every notice returns the headers only
    first = await store.queue.content(ids[0], 1)
    assert b"text/rfc822-headers" in first and b"xxxxxxxx" not in first


async def test_a_bounce_that_bounces_goes_to_postmaster(qmgr: Path, store: Bus) -> None:
    main_cf = qmgr.parent / "etc" / "main.cf"
    main_cf.write_text(main_cf.read_text() + "notify_classes = 2bounce\n")
    for _ in range(100):
        if "reload -- configuration" in qmgr.read_text():
            break
        await asyncio.sleep(0.1)
    qid = await store.queue.enqueue(QueueEntry("", "", [Recipient("u@blocked.test")]),
                              b"Subject: a bounce\r\n\r\nbody\r\n")
    assert await wait_gone(store, qid)
    notice = await next_job(store, "local")
    assert (notice.sender, notice.recipients[0].address) == (
        "double-bounce@mail.postbus.test", "postmaster@mail.postbus.test")
    text = await store.queue.content(notice.queue_id, notice.chunks)
    assert b"Subject: Postmaster Copy: Undelivered Mail\r\n" in text
    assert b"<u@blocked.test>: no mail here" in text
    assert b"Content-Type: message/rfc822" in text and b"Subject: a bounce" in text
    log = qmgr.read_text()
    assert f"{qid}: postmaster non-delivery notification: {notice.queue_id}" in log


async def test_mail_to_the_double_bounce_address_is_discarded(
    qmgr: Path, store: Bus
) -> None:
    qid = await store.queue.enqueue(
        QueueEntry("", "double-bounce@mail.postbus.test",
                   [Recipient("double-bounce@mail.postbus.test")]),
        b"Subject: Postmaster Copy: Undelivered Mail\r\n\r\nbody\r\n")
    assert await wait_gone(store, qid)
    after = await store.queue.enqueue(QueueEntry("", "alice@client.test",
                                           [Recipient("bob@postbus.test")]), b"\r\nbody\r\n")
    job = await next_job(store, "local")  # nothing was handed out for the first
    assert job.queue_id == after
