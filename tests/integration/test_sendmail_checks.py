"""postbus sendmail runs header_checks and body_checks as Postfix's pickup-fed
cleanup does: edits are queued, HOLD queues on hold, DISCARD queues nothing and
succeeds, REJECT queues nothing and fails (Postfix would bounce it to the sender)."""

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


async def test_sendmail_discard_and_reject_queue_nothing(conf: Path, store: Bus) -> None:
    done = await asyncio.to_thread(sendmail, conf, b"Subject: discard\n\nbody\n",
                                   "u@postbus.test")
    assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(sendmail, conf, b"Subject: reject\n\nbody\n",
                                   "u@postbus.test")
    assert done.returncode == 65
    assert done.stderr.decode().endswith(
        "sendmail: fatal: message rejected: 5.7.1 not from here\n")
    done = await asyncio.to_thread(sendmail, conf, b"Subject: s\n\nforbidden\n",
                                   "u@postbus.test")
    assert done.returncode == 65
    assert done.stderr.decode().endswith("sendmail: fatal: message rejected: 5.7.2 body says no\n")
    assert [e async for e in store.queue.entries()] == []
