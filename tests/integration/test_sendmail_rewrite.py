"""postbus sendmail goes through the same cleanup as SMTP mail: the queue holds the
rewritten envelope and headers, and a cleanup failure queues nothing (EX_TEMPFAIL)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from postbus.queue.admin import Bus
from postbus.servers import ServerProcess

pytestmark = pytest.mark.integration

MAIN_CF = """\
compatibility_level = 3.6
myhostname = mx.postbus.test
mydomain = postbus.test
myorigin = postbus.test
mydestination = $myhostname, localhost, postbus.test
canonical_maps = inline:{{root=Super.User}}
virtual_alias_maps = inline:{{team@postbus.test=alice, bob@example.net}}
masquerade_domains = postbus.test
"""


def sendmail(conf: Path, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(conf),
                           "sendmail", *args], input=stdin, capture_output=True, timeout=60)


async def test_sendmail_mail_is_rewritten_like_smtp_mail(
    tmp_path: Path, nats: ServerProcess, store: Bus
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(MAIN_CF + f"postbus_nats_url = {nats.url}\n")
    message = (b"From: root\nTo: team, carol@host.postbus.test\nBcc: secret@example.net\n"
               b"Subject: s\n\nbody\n")
    done = await asyncio.to_thread(sendmail, conf, message, "-f", "root", "-t")
    assert done.returncode == 0, done.stderr
    entries = [e async for e in store.queue.entries()]
    assert len(entries) == 1
    entry = entries[0]
    assert entry.sender == "Super.User@postbus.test"
    # as with Postfix's sendmail, the original recipient is the address as written
    assert [(r.orig_rcpt, r.address) for r in entry.recipients] == [
        ("team", "alice@postbus.test"), ("team", "bob@example.net"),
        ("carol@host.postbus.test", "carol@host.postbus.test"),
        ("secret@example.net", "secret@example.net")]
    content = (await store.queue.content(entry.queue_id, entry.chunks)).decode()
    head = content.split("\r\n\r\n", 1)[0].split("\r\n")
    assert head[:3] == ["From: Super.User@postbus.test",
                        "To: team@postbus.test, carol@postbus.test", "Subject: s"]
    assert head[3] == f"Message-Id: <{head[3][13:27]}.{entry.queue_id}@mx.postbus.test>"
    assert head[4].startswith("Date: ") and len(head) == 5  # Bcc: is gone
    assert entry.message_id == head[3][12:]


async def test_sendmail_cleanup_failure_queues_nothing(
    tmp_path: Path, nats: ServerProcess, store: Bus
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(
        MAIN_CF.replace("virtual_alias_maps = inline:{{team@postbus.test=alice, bob@example.net}}",
                        "virtual_alias_maps = inline:{{team@postbus.test=alice}}, fail:down\n"
                        "virtual_alias_domains =")
        + f"postbus_nats_url = {nats.url}\n")
    done = await asyncio.to_thread(sendmail, conf, b"Subject: s\n\nbody\n", "team@postbus.test")
    assert done.returncode == 75
    assert done.stderr.decode().endswith(
        "sendmail: fatal: message not accepted, try again later: "
        "451 4.3.0 Error: queue file write error\n")
    assert [e async for e in store.queue.entries()] == []
