"""non_smtpd_milters: ``postbus sendmail`` mail goes through the milters as in Postfix's
cleanup (emulated connect from localhost, sender and recipients without <>), their
edits are queued, a reject fails the submission, a recipient reject defers it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postbus.queue.admin import Bus
from postbus.servers import ServerProcess
from tests.integration.test_sendmail_checks import sendmail
from tests.milter_server import (
    CONTINUE,
    REJECT,
    TEMPFAIL,
    ScriptedMilter,
    addheader,
    addrcpt,
    quarantine,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def milter() -> AsyncIterator[ScriptedMilter]:
    m = await ScriptedMilter().start()
    yield m
    await m.stop()


@pytest.fixture
def conf(tmp_path: Path, nats: ServerProcess, milter: ScriptedMilter) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(
        "compatibility_level = 3.6\nmyhostname = mx.postbus.test\nmydomain = postbus.test\n"
        f"non_smtpd_milters = {milter.name}\npostbus_nats_url = {nats.url}\n")
    return etc


async def test_sendmail_through_milter(conf: Path, store: Bus, milter: ScriptedMilter) -> None:
    milter.replies["E"] = [addheader("X-Milter", "seen"), addrcpt("<copy@postbus.test>"),
                           quarantine("check it"), CONTINUE]
    done = await asyncio.to_thread(sendmail, conf, b"Subject: s\n\nbody\n", "-f", "root",
                                   "u@postbus.test")
    assert done.returncode == 0, done.stderr
    [entry] = [e async for e in store.queue.entries()]
    assert entry.queue == "hold"
    assert [r.address for r in entry.recipients] == ["u@postbus.test", "copy@postbus.test"]
    content = await store.queue.content(entry.queue_id, entry.chunks)
    assert b"\r\nX-Milter: seen\r\n" in content
    assert milter.seen("C")[0].startswith(b"localhost\x004")
    assert milter.seen("M") == [b"root@mx.postbus.test\x00"]
    assert milter.seen("R") == [b"u@postbus.test\x00"]


async def test_sendmail_rejected_by_milter(conf: Path, store: Bus,
                                           milter: ScriptedMilter) -> None:
    milter.replies["E"] = [TEMPFAIL]
    done = await asyncio.to_thread(sendmail, conf, b"Subject: s\n\nbody\n", "u@postbus.test")
    assert done.returncode == 75
    assert b"451 4.7.1 Service unavailable - try again later" in done.stderr
    milter.replies["E"] = [CONTINUE]
    milter.replies["R"] = [REJECT]
    done = await asyncio.to_thread(sendmail, conf, b"Subject: s\n\nbody\n", "u@postbus.test")
    assert done.returncode == 75
    assert b"451 4.3.5 Server configuration error" in done.stderr
    assert [e async for e in store.queue.entries()] == []


async def test_sendmail_milter_reject_bounces(conf: Path, store: Bus,
                                              milter: ScriptedMilter) -> None:
    """A 5xx at end of message: queued with every recipient bounced, the qmgr tells the
    sender (as Postfix's cleanup bounces rejected pickup mail); sendmail succeeds."""
    milter.replies["E"] = [REJECT]
    done = await asyncio.to_thread(sendmail, conf, b"Subject: s\n\nbody\n", "u@postbus.test")
    assert done.returncode == 0, done.stderr
    [entry] = [e async for e in store.queue.entries()]
    assert [(r.state, r.dsn, r.reason) for r in entry.recipients] == [
        ("bounced", "5.7.1", "Command rejected")]
