"""Notices through the real queue: a nats-server, the queue file, and the qmgr."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from postbus.config.loader import Config
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry, Recipient
from postbus.servers import ServerProcess
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


async def wait_log(log: Path, text: str, after: int = 0, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.05)):
        if text in log.read_text()[after:]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {text!r} in {log}:\n{log.read_text()[after:]}")


async def test_a_template_file_words_the_notices_of_a_running_qmgr(
    qmgr: Path, store: Bus
) -> None:
    async def bounce(sender: str, rcpt: str) -> str:
        """The notice to ``sender`` of mail to ``rcpt`` that bounced: its text."""
        qid = await store.queue.enqueue(QueueEntry("", sender, [Recipient(rcpt)]),
                                        b"Subject: a message\r\n\r\nbody\r\n")
        assert await wait_gone(store, qid)
        job = await next_job(store, "smtp")  # client.test: through the relayhost
        return (await store.queue.content(job.queue_id, job.chunks)).decode()

    before = await bounce("carol@client.test", "w@blocked.test")  # the qmgr is up
    assert "\r\nSubject: Undelivered Mail Returned to Sender\r\n" in before
    assert "\r\nFrom: Mail Delivery System <MAILER-DAEMON@mail.postbus.test>\r\n" in before
    etc = qmgr.parent / "etc"
    templates = etc / "bounce.cf"
    templates.write_text(
        "failure_template = <<EOF\nFrom: Mail Robot <postmaster>\n"
        "Subject: Returned to you\nPostmaster-Subject: Returned (copy)\n\n"
        "Sorry, $myhostname could not deliver this.\n\n-- the robot\nEOF\n")
    main_cf = etc / "main.cf"
    main_cf.write_text(main_cf.read_text()
                       + f"notify_classes = bounce\nbounce_template_file = {templates}\n")
    await wait_log(qmgr, "reload -- configuration")
    qid = await store.queue.enqueue(QueueEntry("", "alice@client.test",
                                               [Recipient("u@blocked.test")]),
                                    b"Subject: a message\r\n\r\nbody\r\n")
    assert await wait_gone(store, qid)
    to_sender = await next_job(store, "smtp")  # client.test: through the relayhost
    to_postmaster = await next_job(store, "local")
    for job, subject in ((to_sender, "Returned to you"), (to_postmaster, "Returned (copy)")):
        text = (await store.queue.content(job.queue_id, job.chunks)).decode()
        assert "\r\nFrom: Mail Robot <postmaster@mail.postbus.test>\r\n" in text
        assert f"\r\nSubject: {subject}\r\n" in text
        assert "<u@blocked.test>: no mail here" in text
    sender_text = (await store.queue.content(to_sender.queue_id, to_sender.chunks)).decode()
    assert ("Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Sorry, mail.postbus.test could not deliver this.\r\n\r\n-- the robot\r\n\r\n"
            "<u@blocked.test>: no mail here\r\n") in sender_text
    assert "I'm sorry to have to inform you" not in sender_text

    # a file that cannot be used after a reload: said, and the last good words kept
    templates.write_text("failure_template = <<EOF\nSubject: x\n\nAt $no_such_name.\nEOF\n")
    mark = len(qmgr.read_text())
    main_cf.write_text(main_cf.read_text() + "delay_warning_time = 5h\n")
    await wait_log(qmgr, f"error: {templates}: undefined $name in failure template: "
                   "At $no_such_name.; keeping the last good notice templates", mark)
    text = await bounce("bob@client.test", "v@blocked.test")
    assert "\r\nSubject: Returned to you\r\n" in text and "\r\nTo: bob@client.test\r\n" in text


def test_a_template_file_that_cannot_be_used_stops_the_qmgr(
    tmp_path: Path, nats: ServerProcess
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"postbus_nats_url = {nats.url}\n"
                                 f"data_directory = {tmp_path}\n"
                                 f"bounce_template_file = {tmp_path}/none.cf\n")
    (etc / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    run = subprocess.run([sys.executable, "-m", "qmgr", "-c", str(etc), "-n", "qmgr"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1
    assert (f"fatal: {etc}/main.cf, line 3: parameter bounce_template_file: "
            f"open {tmp_path}/none.cf: No such file or directory") in run.stderr
