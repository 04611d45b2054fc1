"""postbus sendmail runs header_checks and body_checks as Postfix's pickup-fed
cleanup does: edits are queued, HOLD queues on hold, DISCARD queues nothing and
succeeds, REJECT succeeds too and bounces the message to its sender
(cleanup_bounce(): every recipient bounced, the qmgr sends the notice)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from postbus.queue.admin import Bus
from postbus.servers import ServerProcess

pytestmark = pytest.mark.integration

HEADER_CHECKS = """\
/^Subject: reject/ REJECT not from here
/^Subject: discard/ DISCARD
/^Subject: hold/ HOLD
/^X-Secret:/ IGNORE
/^Subject: (tag)/ REPLACE Subject: [x] $1
/^Subject: scan/ FILTER scan:[127.0.0.1]:10026
"""


def sendmail(conf: Path, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(conf),
                           "sendmail", *args], input=stdin, capture_output=True, timeout=60)


@pytest.fixture
def conf(tmp_path: Path, nats: ServerProcess) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "header_checks").write_text(HEADER_CHECKS)
    (etc / "body_checks").write_text("/^forbidden/ REJECT 5.7.2 body says no\n")
    (etc / "main.cf").write_text(
        "compatibility_level = 3.6\nmyhostname = mx.postbus.test\nmydomain = postbus.test\n"
        f"header_checks = regexp:{etc}/header_checks\nbody_checks = pcre:{etc}/body_checks\n"
        f"postbus_nats_url = {nats.url}\n")
    return etc


async def test_sendmail_edits_and_hold(conf: Path, store: Bus) -> None:
    done = await asyncio.to_thread(sendmail, conf, b"Subject: tag\nX-Secret: s\n\nbody\n",
                                   "-f", "root", "u@postbus.test")
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(sendmail, conf, b"Subject: hold\n\nbody\n", "u@postbus.test")
    assert done.returncode == 0, done.stderr
    entries = sorted([e async for e in store.queue.entries()], key=lambda e: e.queue)
    assert [e.queue for e in entries] == ["hold", "incoming"]
    content = await store.queue.content(entries[1].queue_id, entries[1].chunks)
    assert content.startswith(b"Subject: [x] tag\r\nMessage-Id: ")
    assert b"X-Secret" not in content


async def test_sendmail_discard_queues_nothing(conf: Path, store: Bus) -> None:
    done = await asyncio.to_thread(sendmail, conf, b"Subject: discard\n\nbody\n",
                                   "u@postbus.test")
    assert done.returncode == 0, done.stderr
    assert [e async for e in store.queue.entries()] == []


async def test_sendmail_reject_is_queued_bounced(conf: Path, store: Bus) -> None:
    done = await asyncio.to_thread(sendmail, conf, b"Subject: reject\n\nbody\n",
                                   "-f", "root@postbus.test", "u@postbus.test", "v@postbus.test")
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(sendmail, conf, b"Subject: s\n\nforbidden\n",
                                   "u@postbus.test")
    assert done.returncode == 0, done.stderr
    entries = {e.recipients[0].reason: e async for e in store.queue.entries()}
    assert sorted(entries) == ["body says no", "not from here"]
    assert [(r.address, r.state, r.dsn) for r in entries["not from here"].recipients] == [
        ("u@postbus.test", "bounced", "5.7.1"), ("v@postbus.test", "bounced", "5.7.1")]
    assert entries["body says no"].recipients[0].dsn == "5.7.2"


async def test_rejected_sendmail_mail_bounces_to_its_sender(qmgr: Path, store: Bus) -> None:
    etc = qmgr.parent / "etc"
    (etc / "header_checks").write_text(HEADER_CHECKS)
    with open(etc / "main.cf", "a") as main:
        main.write(f"header_checks = regexp:{etc}/header_checks\n")
    done = await asyncio.to_thread(sendmail, etc, b"Subject: reject\n\nbody\n",
                                   "-f", "alice@client.test", "u@postbus.test")
    assert done.returncode == 0, done.stderr
    for _ in range(400):  # the notice replaces the rejected message
        entries = [e async for e in store.queue.entries()]
        if [e.sender for e in entries] == [""]:
            break
        await asyncio.sleep(0.05)
    assert [(e.sender, [r.address for r in e.recipients]) for e in entries] == [
        ("", ["alice@client.test"])]
    notice = (await store.queue.content(entries[0].queue_id, entries[0].chunks)).decode()
    assert "not from here" in notice


async def test_sendmail_content_filter_and_filter_action(conf: Path, store: Bus) -> None:
    """content_filter marks mail from sendmail as pickup does; a FILTER action wins."""
    main = conf / "main.cf"
    main.write_text(main.read_text() + "content_filter = smtp:[127.0.0.1]:10025\n")
    for subject in ("plain", "scan"):
        done = await asyncio.to_thread(sendmail, conf, f"Subject: {subject}\n\nb\n".encode(),
                                       "u@postbus.test")
        assert done.returncode == 0, done.stderr
    filters = sorted([e.filter async for e in store.queue.entries()])
    assert filters == ["scan:[127.0.0.1]:10026", "smtp:[127.0.0.1]:10025"]
