"""smtpd_milters: a milter in the test decides and edits; replies are Postfix's texts
(milter8.c, smtpd.c's check_milter_reply(), cleanup_milter.c)."""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Running, StartSmtpd
from tests.milter_server import (
    ACCEPT,
    CONTINUE,
    DISCARD,
    HANG_UP,
    REJECT,
    TEMPFAIL,
    ScriptedMilter,
    addheader,
    addrcpt,
    chgfrom,
    chgheader,
    delrcpt,
    insheader,
    pkt,
    quarantine,
    replbody,
    replycode,
)

pytestmark = pytest.mark.integration

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")
MESSAGE = b"From: a@example.org\r\nSubject: hi\r\nX-Old: 1\r\n\r\nbody line\r\n"
TEMPFAIL_TEXT = "451 4.7.1 Service unavailable - try again later"
REJECT_TEXT = "550 5.7.1 Command rejected"


@pytest.fixture
async def milter() -> AsyncIterator[ScriptedMilter]:
    m = await ScriptedMilter().start()
    yield m
    await m.stop()


async def start(smtpd: StartSmtpd, milter: ScriptedMilter, **cf: str) -> Running:
    return await smtpd(smtpd_milters=milter.name, **cf)


async def transaction(run: Running, rcpts: list[str], body: bytes = MESSAGE) -> str:
    client = await run.client()
    assert (await client.cmd("EHLO client.example")).startswith("250-")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    for rcpt in rcpts:
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == r.RCPT_OK
    assert await client.cmd("DATA") == r.DATA_GO_AHEAD
    await client.send(body + b".\r\n")
    reply = await client.reply()
    assert await client.cmd("QUIT") == r.BYE
    return reply


async def queued(run: Running, reply: str) -> tuple[object, bytes]:
    match = QUEUED.match(reply)
    assert match, reply
    got = await run.store.queue.get(match.group(1))
    assert got is not None
    entry, _ = got
    return entry, await run.store.queue.content(match.group(1), entry.chunks)


async def test_every_modification(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    milter.replies["E"] = [
        addheader("X-Added", "yes"), insheader(0, "X-Top", "first"),
        chgheader(1, "Subject", "changed"), chgheader(1, "X-Old", ""),
        addrcpt("<extra@postbus.test>"), delrcpt("<b@postbus.test>"),
        chgfrom("<new@example.org>"), replbody(b"new body\r\nline 2\r\n"), CONTINUE]
    run = await start(smtpd, milter)
    entry, content = await queued(run, await transaction(
        run, ["a@postbus.test", "b@postbus.test"]))
    assert entry.sender == "new@example.org"  # type: ignore[attr-defined]
    assert [x.address for x in entry.recipients] == [  # type: ignore[attr-defined]
        "a@postbus.test", "extra@postbus.test"]
    head, _, body = content.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"X-Top: first"  # index 0: above our Received:
    assert lines[1].startswith(b"Received: from client.example")
    assert b"Subject: changed" in lines and b"X-Added: yes" in lines
    assert not any(x.startswith(b"X-Old") for x in lines)
    assert body == b"new body\r\nline 2\r\n"
    # what the milter saw: connect, helo, envelope with <>, headers without our Received:
    connect = milter.seen("C")[0]
    assert connect.startswith(b"[127.0.0.1]\x004") and connect.endswith(b"127.0.0.1\x00")
    assert milter.seen("H") == [b"client.example\x00"]
    assert milter.seen("M") == [b"<s@example.org>\x00"]
    assert milter.seen("R") == [b"<a@postbus.test>\x00", b"<b@postbus.test>\x00"]
    names = [h.split(b"\0")[0] for h in milter.seen("L")]
    assert names[0] == b"From" and b"Received" not in names
    assert milter.seen("B") == [b"body line\r\n"]
    assert milter.macros("C")["j"] == "mx.postbus.test"
    assert milter.macros("C")["{daemon_name}"] == "mx.postbus.test"
    assert milter.macros("M")["{mail_addr}"] == "s@example.org"
    assert milter.macros("R")["{rcpt_addr}"] == "a@postbus.test"
    # {i}: Postfix has a queue ID from the first recipient the milters accepted on
    rcpt_macros = [m for event, _, m in milter.events if event == "R"]
    assert "i" not in rcpt_macros[0]
    assert rcpt_macros[1]["i"] == entry.queue_id  # type: ignore[attr-defined]
    assert milter.macros("E")["i"] == entry.queue_id  # type: ignore[attr-defined]


async def test_reject_and_tempfail_at_each_stage(
        smtpd: StartSmtpd, milter: ScriptedMilter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    milter.replies["R"] = lambda data: [REJECT] if b"bad" in data else [CONTINUE]
    milter.replies["M"] = lambda data: [TEMPFAIL] if b"later" in data else [CONTINUE]
    run = await start(smtpd, milter)
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<later@example.org>") == TEMPFAIL_TEXT
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await client.cmd("RCPT TO:<bad@postbus.test>") == REJECT_TEXT
    assert await client.cmd("RCPT TO:<ok@postbus.test>") == r.RCPT_OK
    assert any(re.fullmatch(r"\w+: milter-reject: RCPT from unknown\[127\.0\.0\.1\]: "
                            r"550 5\.7\.1 Command rejected; from=<s@example\.org> "
                            r"to=<bad@postbus\.test> proto=ESMTP helo=<client\.example>",
                            rec.getMessage()) for rec in caplog.records)


async def test_connect_reject_persists(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    milter.replies["C"] = [REJECT]
    run = await start(smtpd, milter)
    client = await run.client(banner=False)
    assert await client.reply() == "554 mx.postbus.test ESMTP not accepting connections"
    assert (await client.cmd("HELO client.example")) == "250 mx.postbus.test"
    assert await client.cmd("MAIL FROM:<s@example.org>") == REJECT_TEXT


async def test_end_of_message_replies(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    milter.replies["E"] = [replycode("554 5.7.0 Go away")]
    run = await start(smtpd, milter)
    assert await transaction(run, ["a@postbus.test"]) == "554 5.7.0 Go away"
    milter.replies["E"] = [quarantine("suspicious"), CONTINUE]
    entry, _ = await queued(run, await transaction(run, ["a@postbus.test"]))
    assert entry.queue == "hold"  # type: ignore[attr-defined]
    milter.replies["E"] = [TEMPFAIL]
    assert await transaction(run, ["a@postbus.test"]) == TEMPFAIL_TEXT
    milter.replies["E"] = [ACCEPT]
    await queued(run, await transaction(run, ["a@postbus.test"]))


@pytest.mark.parametrize("behaviour", ["garbage", "close", "hang"])
async def test_broken_milter_gets_default_action(
        smtpd: StartSmtpd, milter: ScriptedMilter, behaviour: str) -> None:
    milter.replies["E"] = behaviour
    run = await start(smtpd, milter, milter_content_timeout="1s")
    assert await transaction(run, ["a@postbus.test"]) == TEMPFAIL_TEXT
    run2 = await start(smtpd, milter, milter_content_timeout="1s",
                       milter_default_action="accept")
    await queued(run2, await transaction(run2, ["a@postbus.test"]))
    run3 = await start(smtpd, milter, milter_content_timeout="1s",
                       milter_default_action="reject")
    assert await transaction(run3, ["a@postbus.test"]) == "550 5.5.0 Service unavailable"
    run4 = await start(smtpd, milter, milter_content_timeout="1s",
                       milter_default_action="quarantine")
    entry, _ = await queued(run4, await transaction(run4, ["a@postbus.test"]))
    assert entry.queue == "hold"  # type: ignore[attr-defined]


async def test_unreachable_milter(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    await milter.stop()
    run = await smtpd(smtpd_milters=milter.name, milter_connect_timeout="2s")
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<s@example.org>") == TEMPFAIL_TEXT


async def test_helo_timeout_then_default(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    milter.replies["H"] = "hang"
    run = await start(smtpd, milter, milter_command_timeout="1s")
    client = await run.client()
    assert (await client.cmd("EHLO client.example")).startswith("250-")
    assert await client.cmd("MAIL FROM:<s@example.org>") == TEMPFAIL_TEXT


async def test_protocol_2_milter_gets_no_data_event(smtpd: StartSmtpd,
                                                    milter: ScriptedMilter) -> None:
    """A version 2 filter is sent only the events of version 2 (no DATA, no unknown)."""
    milter.version = 2
    run = await start(smtpd, milter)
    await queued(run, await transaction(run, ["a@postbus.test"]))
    letters = [event for event, _, _ in milter.events]
    assert letters[:4] == ["C", "H", "M", "R"] and "T" not in letters
    assert letters[-1] == "E"
    milter.events.clear()
    run2 = await start(smtpd, milter, milter_protocol="2")
    await queued(run2, await transaction(run2, ["a@postbus.test"]))
    assert "T" not in [event for event, _, _ in milter.events]


async def test_no_reply_per_header_and_skip(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    """SMFIP_NR_HDR: headers are sent without waiting; SMFIR_SKIP ends the body."""
    milter.protocol = 0x80 | 0x400  # NR_HDR, SKIP
    milter.replies["B"] = [pkt(b"s")]
    milter.replies["E"] = [addheader("X-Seen", "all"), CONTINUE]
    run = await start(smtpd, milter)
    body = MESSAGE + b"".join(b"%d" % i + b"x" * 1000 + b"\r\n" for i in range(200))
    _, content = await queued(run, await transaction(run, ["a@postbus.test"], body))
    assert b"\r\nX-Seen: all\r\n" in content
    assert len(milter.seen("L")) == 5  # with the Message-Id: and Date: cleanup added
    assert len(milter.seen("B")) == 1  # the first 64 KiB chunk, then skipped


async def test_envelope_quarantine_holds_the_transaction(
        smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    milter.replies["R"] = [quarantine("rcpt looks odd"), CONTINUE]
    run = await start(smtpd, milter)
    entry, _ = await queued(run, await transaction(run, ["a@postbus.test"]))
    assert entry.queue == "hold"  # type: ignore[attr-defined]


async def test_two_milters_in_turn_over_a_unix_socket(
        smtpd: StartSmtpd, milter: ScriptedMilter, tmp_path: Path) -> None:
    """The second milter sees the first one's edits, as Postfix's cleanup re-reads its
    queue file; ``unix:`` endpoints work."""
    second = ScriptedMilter()
    path = tmp_path / "m.sock"
    server = await asyncio.start_unix_server(second._session, str(path))
    try:
        milter.replies["E"] = [addheader("X-First", "1"), CONTINUE]
        second.replies["E"] = [chgheader(1, "X-First", "changed"), CONTINUE]
        run = await smtpd(smtpd_milters=f"{milter.name}, unix:{path}",
                          milter_macro_defaults="{auth_type}=none")
        _, content = await queued(run, await transaction(run, ["a@postbus.test"]))
        assert b"\r\nX-First: changed\r\n" in content
        assert any(h.startswith(b"X-First\x00") for h in second.seen("L"))
        assert second.macros("M")["{auth_type}"] == "none"  # milter_macro_defaults
    finally:
        server.close()


async def test_metrics_per_milter_and_action(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    milter.replies["E"] = [addheader("X-A", "1"), REJECT]
    run = await start(smtpd, milter)
    before = metric("postbus_milter_replies_total", milter.name, event="bodyeob",
                    action="reject")
    edits = metric("postbus_milter_edits_total", milter.name, action="addheader")
    assert await transaction(run, ["a@postbus.test"]) == REJECT_TEXT
    assert metric("postbus_milter_replies_total", milter.name, event="bodyeob",
                  action="reject") == before + 1
    assert metric("postbus_milter_edits_total", milter.name, action="addheader") == edits + 1
    assert metric("postbus_milter_event_seconds_count", milter.name, event="bodyeob") >= 1


def metric(name: str, milter: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, {"milter": milter, **labels})
    return value or 0.0


@pytest.mark.parametrize(("field", "value", "warning"), [
    ("version", 7, "protocol version 7 conflict with MTA protocol version 6"),
    ("actions", 0x1000, "request mask 0x1000 conflict with MTA request mask 0x1ff"),
])
async def test_bad_negotiation_gets_default_action(
        smtpd: StartSmtpd, milter: ScriptedMilter, caplog: pytest.LogCaptureFixture,
        field: str, value: int, warning: str) -> None:
    caplog.set_level(logging.INFO)
    setattr(milter, field, value)
    run = await start(smtpd, milter)
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<s@example.org>") == TEMPFAIL_TEXT
    assert f"milter {milter.name}: {warning}" in caplog.messages


@pytest.mark.parametrize("stage", ["C", "M", "R", "T", "L", "B"])
async def test_milter_dying_at_any_stage_loses_nothing(
        smtpd: StartSmtpd, milter: ScriptedMilter, stage: str) -> None:
    """A milter that hangs up at any event: with milter_default_action = accept the
    message is queued all the same; the session goes on."""
    milter.replies[stage] = "close"
    run = await start(smtpd, milter, milter_default_action="accept")
    await queued(run, await transaction(run, ["a@postbus.test"]))


async def test_late_answer_is_not_taken(smtpd: StartSmtpd, milter: ScriptedMilter,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """An answer after milter_command_timeout: the default action, the milter is done
    for the session (its late packet is never read as the answer to something else)."""
    caplog.set_level(logging.INFO)
    milter.replies["R"] = "late"
    run = await start(smtpd, milter, milter_command_timeout="1s")
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await client.cmd("RCPT TO:<a@postbus.test>") == TEMPFAIL_TEXT
    assert await client.cmd("RCPT TO:<b@postbus.test>") == TEMPFAIL_TEXT
    assert await client.cmd("RSET") == r.OK
    assert await client.cmd("QUIT") == r.BYE
    assert (f"milter {milter.name}: can't read SMFIC_RCPT reply packet header: "
            "Connection timed out") in caplog.messages
    assert len(milter.seen("R")) == 1


async def test_discard_at_rcpt_skips_the_rest(smtpd: StartSmtpd, milter: ScriptedMilter,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A DISCARD decides the transaction: no more events to the milters, the client is
    told it was queued, nothing is (smtpd.c's MILTER_SKIP_FLAGS)."""
    caplog.set_level(logging.INFO)
    milter.replies["R"] = [DISCARD]
    run = await start(smtpd, milter)
    reply = await transaction(run, ["a@postbus.test", "b@postbus.test"])
    assert QUEUED.match(reply), reply
    assert len(milter.seen("R")) == 1 and not milter.seen("T") and not milter.seen("E")
    assert [e async for e in run.store.queue.entries()] == []
    assert any("milter-discard: RCPT from unknown[127.0.0.1]: milter triggers DISCARD "
               "action;" in m for m in caplog.messages)


async def test_milter_gone_while_replacing_the_body(smtpd: StartSmtpd,
                                                    milter: ScriptedMilter) -> None:
    """Half a new body and then nothing: not the old message, not half the new one
    (Postfix: 421 4.7.0 Service unavailable), even with milter_default_action = accept."""
    milter.replies["E"] = [replbody(b"first half\r\n"), HANG_UP]
    run = await start(smtpd, milter, milter_default_action="accept")
    client = await run.client()
    await client.cmd("EHLO client.example")
    await client.cmd("MAIL FROM:<s@example.org>")
    await client.cmd("RCPT TO:<a@postbus.test>")
    await client.cmd("DATA")
    await client.send(MESSAGE + b".\r\n")
    assert await client.reply() == "421 4.7.0 Service unavailable"
    assert [e async for e in run.store.queue.entries()] == []


async def test_milter_chooses_its_macros(smtpd: StartSmtpd, milter: ScriptedMilter) -> None:
    """SMFIF_SETSYMLIST: the milter's own list for a stage replaces milter_mail_macros."""
    milter.symlists = struct.pack(">I", 2) + b"{client_addr} _\x00"  # SMFIM_ENVFROM
    run = await start(smtpd, milter)
    await queued(run, await transaction(run, ["a@postbus.test"]))
    assert milter.macros("M") == {"{client_addr}": "127.0.0.1", "_": "unknown [127.0.0.1]"}
    assert "{rcpt_addr}" in milter.macros("R")  # the other stages keep theirs
