"""header_checks and body_checks through our real smtpd into the real queue: the
reply at the end of DATA, what is queued (or not), and cleanup's log lines."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Running, StartSmtpd

pytestmark = pytest.mark.integration

HEADER_CHECKS = r"""
/^Subject: reject me/ REJECT go away
/^Subject: later/ REJECT 4.7.0 try later
/^Subject: discard me/ DISCARD
/^Subject: hold me/ HOLD look at it
/^Subject: redirect me/ REDIRECT boss@postbus.test
/^Subject: copy me/ BCC archive@postbus.test
/^Subject: (tag me)$/ REPLACE Subject: [tagged] $1
/^X-Secret:/ IGNORE
/^X-Mailer:/ PREPEND X-Flagged: yes
/^Received: from client\.example / WARN our own Received is checked
"""
BODY_CHECKS = r"""
/^viagra/ REJECT 5.7.9 spam body
"""
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")
ORIGIN = ("from unknown[127.0.0.1]; from=<s@example.org> to=<user@postbus.test> "
          "proto=ESMTP helo=<client.example>")


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "header_checks").write_text(HEADER_CHECKS)
    (tmp_path / "body_checks").write_text(BODY_CHECKS)
    return {"header_checks": f"regexp:{tmp_path}/header_checks",
            "body_checks": f"pcre:{tmp_path}/body_checks"}


async def send(run: Running, body: bytes, rcpts: tuple[str, ...] = ("user@postbus.test",),
               ) -> str:
    client = await run.client()
    assert (await client.cmd("EHLO client.example")).startswith("250-")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    for rcpt in rcpts:
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == r.RCPT_OK
    assert await client.cmd("DATA") == r.DATA_GO_AHEAD
    await client.send(body + b".\r\n")
    reply = await client.reply()
    assert await client.cmd("QUIT") == r.BYE
    await client.close()
    return reply


async def queued(run: Running) -> list[str]:
    return [e.queue_id async for e in run.store.queue.entries()]


def cleanup_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.name == "postbus.cleanup"
            and "message-id=" not in rec.getMessage()]


async def test_reject_answers_550_and_queues_nothing(
        smtpd: StartSmtpd, tables: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run = await smtpd(**tables)
    assert await send(run, b"Subject: reject me\r\n\r\nhi\r\n") == "550 5.7.1 go away"
    assert await send(run, b"Subject: later\r\n\r\nhi\r\n") == "451 4.7.0 try later"
    assert await send(run, b"Subject: x\r\n\r\nok\r\nviagra!\r\n") == "550 5.7.9 spam body"
    assert await queued(run) == []
    # the queue ID is drawn before cleanup, as Postfix opens its queue file before DATA
    clients = [rec.getMessage() for rec in caplog.records
               if rec.getMessage().endswith(": client=unknown[127.0.0.1]")]
    assert len(clients) == 3
    lines = [re.sub(r"^\w+: ", "QID: ", line) for line in cleanup_lines(caplog)]
    # smtpd's own Received: header is checked too, its lines joined by a newline that
    # the log shows as "?", as Postfix's logger does
    received = re.compile(r"QID: warning: header Received: from client\.example \(unknown "
                          r"\[127\.0\.0\.1\]\)\?\?by mx\.postbus\.test \(Postbus\) with "
                          r"ESMTP id \w+\?\?for <user@postbus\.test>; .* " + re.escape(ORIGIN)
                          + ": our own Received is checked$")
    assert [bool(received.match(line)) for line in lines] == [True, False] * 3
    assert lines[1::2] == [
        f"QID: reject: header Subject: reject me {ORIGIN}: 5.7.1 go away",
        f"QID: reject: header Subject: later {ORIGIN}: 4.7.0 try later",
        f"QID: reject: body viagra! {ORIGIN}: 5.7.9 spam body",
    ]


async def test_discard_answers_250_and_queues_nothing(
        smtpd: StartSmtpd, tables: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run = await smtpd(**tables)
    reply = await send(run, b"Subject: discard me\r\n\r\nhi\r\n")
    match = QUEUED.match(reply)
    assert match, reply
    qid = match.group(1)
    assert await queued(run) == []
    assert f"{qid}: discard: header Subject: discard me {ORIGIN}" in cleanup_lines(caplog)
    assert [rec.getMessage() for rec in caplog.records].count(
        f"{qid}: client=unknown[127.0.0.1]") == 1


async def test_hold_queues_on_hold(smtpd: StartSmtpd, tables: dict[str, str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run = await smtpd(**tables)
    match = QUEUED.match(await send(run, b"Subject: hold me\r\n\r\nhi\r\n"))
    assert match
    qid = match.group(1)
    got = await run.store.queue.get(qid)
    assert got is not None and got[0].queue == "hold"
    assert f"{qid}: hold: header Subject: hold me {ORIGIN}: look at it" in cleanup_lines(caplog)
    assert [rec.getMessage() for rec in caplog.records].count(
        f"{qid}: client=unknown[127.0.0.1]") == 1


async def test_header_edits_are_queued(smtpd: StartSmtpd, tables: dict[str, str]) -> None:
    run = await smtpd(**tables)
    body = (b"Subject: tag me\r\nX-Secret: one\r\n\ttwo\r\nX-Mailer: m\r\n\r\n"
            b"X-Secret: in the body stays\r\n")
    match = QUEUED.match(await send(run, body))
    assert match
    got = await run.store.queue.get(match.group(1))
    assert got is not None
    content = await run.store.queue.content(got[0].queue_id, got[0].chunks)
    head, _, rest = content.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"Received: from client.example")
    assert [x for x in lines if not x.startswith((b"\t", b"Received:", b"Message-Id:",
                                                    b"Date:", b"From:"))] == [
        b"Subject: [tagged] tag me", b"X-Flagged: yes", b"X-Mailer: m"]
    assert rest == b"X-Secret: in the body stays\r\n"


async def test_redirect_and_bcc_change_the_recipients(
        smtpd: StartSmtpd, tables: dict[str, str]) -> None:
    run = await smtpd(**tables)
    match = QUEUED.match(await send(run, b"Subject: redirect me\r\n\r\nhi\r\n",
                                    ("user@postbus.test", "other@postbus.test")))
    assert match
    got = await run.store.queue.get(match.group(1))
    assert got is not None
    assert [(x.address, x.orig_rcpt) for x in got[0].recipients] == [
        ("boss@postbus.test", "user@postbus.test"), ("boss@postbus.test", "other@postbus.test")]
    match = QUEUED.match(await send(run, b"Subject: copy me\r\n\r\nhi\r\n"))
    assert match
    got = await run.store.queue.get(match.group(1))
    assert got is not None
    assert [(x.address, x.notify) for x in got[0].recipients] == [
        ("user@postbus.test", ""), ("archive@postbus.test", "NEVER")]


async def test_no_header_body_checks_turns_them_off(
        smtpd: StartSmtpd, tables: dict[str, str]) -> None:
    run = await smtpd(receive_override_options="no_header_body_checks", **tables)
    assert QUEUED.match(await send(run, b"Subject: reject me\r\n\r\nviagra\r\n"))
    assert len(await queued(run)) == 1


async def test_table_that_cannot_answer_defers(smtpd: StartSmtpd) -> None:
    run = await smtpd(header_checks="hash:/nonexistent/table")
    assert await send(run, b"Subject: x\r\n\r\nhi\r\n") == "451 4.3.0 Error: queue file write error"
    assert await queued(run) == []
