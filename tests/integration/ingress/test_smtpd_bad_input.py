"""Every bad input gets Postfix's reply or a clean close, and nothing half-received is queued."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from postbus.bus.jetstream import connect, ensure_streams
from postbus.queue.admin import Bus
from postbus.queue.file import QueueFile
from postbus.queue.work import WorkBus
from postbus.servers import ServerProcess
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Running, StartSmtpd, running_servers

pytestmark = pytest.mark.integration


async def queue_size(run: Running) -> int:
    return len([e async for e in run.store.queue.entries()])


async def test_sequence_and_syntax_errors(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    c = await run.client()
    assert await c.cmd("FOO bar") == r.UNRECOGNIZED
    assert await c.cmd("RCPT TO:<u@postbus.test>") == r.NEED_MAIL
    assert await c.cmd("DATA") == r.NEED_RCPT
    assert await c.cmd("EHLO") == r.EHLO_SYNTAX
    assert await c.cmd("MAIL FROM:<s@example.org") == r.BAD_SENDER_SYNTAX
    assert await c.cmd("MAIL FROM:<s@example.org> X=1") == "555 5.5.4 Unsupported option: X=1"
    assert await c.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await c.cmd("MAIL FROM:<s@example.org>") == r.NESTED_MAIL
    assert await c.cmd("RCPT TO:<>") == r.BAD_RECIPIENT_SYNTAX
    assert await c.cmd("DATA") == r.NO_VALID_RECIPIENTS
    assert await c.cmd("RCPT TO:<u@postbus.test> NOTIFY=SOMETIMES") == r.BAD_NOTIFY
    assert await c.cmd("QUIT") == r.BYE
    assert await c.reply() == "<EOF>"


async def test_size_limits(smtpd: StartSmtpd) -> None:
    run = await smtpd(message_size_limit="1000")
    c = await run.client()
    assert "250-SIZE 1000" in await c.cmd("EHLO c")
    assert await c.cmd("MAIL FROM:<s@example.org> SIZE=1001") == r.SIZE_EXCEEDS_LIMIT
    assert await c.cmd("MAIL FROM:<s@example.org> SIZE=1000") == r.MAIL_OK
    assert await c.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK
    assert await c.cmd("DATA") == r.DATA_GO_AHEAD
    await c.send(b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" + (b"y" * 78 + b"\r\n") * 50)
    await c.send(b".\r\n")
    assert await c.reply() == r.MESSAGE_TOO_BIG
    # the session goes on, with a fresh transaction
    assert await c.cmd("RCPT TO:<u@postbus.test>") == r.NEED_MAIL
    assert await c.cmd("QUIT") == r.BYE
    assert await queue_size(run) == 0


async def test_long_lines_are_kept_whole(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    c = await run.client()
    assert await c.cmd("NOOP " + "x" * 5000) == r.OK  # truncated at line_length_limit
    await c.cmd("HELO c")
    await c.cmd("MAIL FROM:<s@example.org>")
    await c.cmd("RCPT TO:<u@postbus.test>")
    await c.cmd("DATA")
    long_line = b"z" * 10000
    await c.send(b"Subject: long\r\n\r\n" + long_line + b"\r\n.\r\n")
    reply = await c.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    qid = reply.rsplit(" ", 1)[1]
    entry, _ = await run.store.queue.get(qid)  # type: ignore[misc]
    content = await run.store.queue.content(qid, entry.chunks)
    assert content.endswith(b"\r\n\r\n" + long_line + b"\r\n")


async def test_header_longer_than_header_size_limit_is_cut(smtpd: StartSmtpd) -> None:
    run = await smtpd(header_size_limit="1000")
    c = await run.client()
    await c.cmd("HELO c")
    await c.cmd("MAIL FROM:<s@example.org>")
    await c.cmd("RCPT TO:<u@postbus.test>")
    await c.cmd("DATA")
    big = b"X-Big: " + b"a" * 60 + b"\r\n" + (b"\t" + b"b" * 60 + b"\r\n") * 40
    await c.send(b"Subject: s\r\n" + big + b"X-After: 1\r\n\r\nbody\r\n.\r\n")
    qid = (await c.reply()).rsplit(" ", 1)[1]
    entry, _ = await run.store.queue.get(qid)  # type: ignore[misc]
    content = await run.store.queue.content(qid, entry.chunks)
    header = content[content.index(b"X-Big:") : content.index(b"X-After:")]
    # Postfix counts a header's size with one "\n" between its lines (no CR)
    assert 900 < len(header.replace(b"\r\n", b"\n")) - 1 <= 1000
    assert b"\r\nX-After: 1\r\n" in content and content.endswith(b"\r\n\r\nbody\r\n")


async def test_disconnect_in_the_middle_of_data_queues_nothing(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    run = await smtpd()
    c = await run.client()
    await c.cmd("EHLO c")
    await c.cmd("MAIL FROM:<s@example.org>")
    await c.cmd("RCPT TO:<u@postbus.test>")
    assert await c.cmd("DATA") == r.DATA_GO_AHEAD
    await c.send(b"Subject: x\r\n\r\nhalf a message\r\nno end")
    await c.close()
    for _ in range(100):
        if any("disconnect from" in rec.getMessage() for rec in caplog.records):
            break
        await asyncio.sleep(0.02)
    lines = [rec.getMessage() for rec in caplog.records]
    assert "lost connection after DATA (30 bytes) from unknown[127.0.0.1]" in lines
    assert "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4" in lines
    assert await queue_size(run) == 0


async def test_pipelined_replies_come_in_order_in_one_write(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    c = await run.client()
    await c.send(
        "EHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<a@postbus.test>\r\n"
        "RCPT TO:<x@elsewhere.example>\r\nRCPT TO:<b@postbus.test>\r\nDATA\r\n"
        "Subject: p\r\n\r\npipelined\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n"
    )
    replies: list[str] = []
    while not replies or replies[-1] != "<EOF>":
        replies.append(await c.reply())
    assert replies[0].startswith("250-mx.postbus.test\n250-PIPELINING")
    assert replies[1:6] == [
        r.MAIL_OK, r.RCPT_OK, "454 4.7.1 <x@elsewhere.example>: Relay access denied",
        r.RCPT_OK, r.DATA_GO_AHEAD,
    ]
    assert replies[6].startswith("250 2.0.0 Ok: queued as ")
    assert replies[7:] == [r.OK, r.OK, r.BYE, "<EOF>"]
    qid = replies[6].rsplit(" ", 1)[1]
    entry, _ = await run.store.queue.get(qid)  # type: ignore[misc]
    assert [x.address for x in entry.recipients] == ["a@postbus.test", "b@postbus.test"]


async def test_too_many_errors_closes_with_421(smtpd: StartSmtpd) -> None:
    run = await smtpd(smtpd_hard_error_limit="3")
    c = await run.client()
    for _ in range(3):
        assert await c.cmd("BOGUS") == r.UNRECOGNIZED
    assert await c.cmd("NOOP") == "421 4.7.0 mx.postbus.test Error: too many errors"
    assert await c.reply() == "<EOF>"


async def test_too_many_recipients(smtpd: StartSmtpd) -> None:
    run = await smtpd(smtpd_recipient_limit="2")
    c = await run.client()
    await c.cmd("HELO c")
    await c.cmd("MAIL FROM:<s@example.org>")
    assert await c.cmd("RCPT TO:<a@postbus.test>") == r.RCPT_OK
    assert await c.cmd("RCPT TO:<b@postbus.test>") == r.RCPT_OK
    assert await c.cmd("RCPT TO:<c@postbus.test>") == r.TOO_MANY_RECIPIENTS


async def test_helo_required_and_vrfy_disabled(smtpd: StartSmtpd) -> None:
    run = await smtpd(smtpd_helo_required="yes", disable_vrfy_command="yes")
    c = await run.client()
    assert await c.cmd("MAIL FROM:<s@example.org>") == r.NEED_HELO
    assert await c.cmd("ETRN example.org") == r.ETRN_NEED_HELO
    assert await c.cmd("VRFY u@postbus.test") == r.VRFY_DISABLED
    assert "VRFY" not in await c.cmd("EHLO c")


async def test_idle_client_times_out(smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    run = await smtpd(smtpd_timeout="1s")
    c = await run.client()
    await c.cmd("EHLO c")
    assert await c.reply(timeout=5) == "421 4.4.2 mx.postbus.test Error: timeout exceeded"
    assert await c.reply() == "<EOF>"
    assert "timeout after EHLO from unknown[127.0.0.1]" in [m.getMessage() for m in caplog.records]


async def test_the_timeout_counts_from_the_last_command(
        smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    """smtpd_timeout bounds each wait for input, not the session: one timer per
    connection is moved on as commands come (a slow but live client stays)."""
    caplog.set_level(logging.INFO, "postbus.smtpd")
    run = await smtpd(smtpd_timeout="1s")
    c = await run.client()
    loop = asyncio.get_running_loop()
    for _ in range(4):  # 2.4 s in all, never 1 s idle
        await asyncio.sleep(0.6)
        assert await c.cmd("NOOP") == "250 2.0.0 Ok"
    last = loop.time()
    assert await c.reply(timeout=5) == "421 4.4.2 mx.postbus.test Error: timeout exceeded"
    assert loop.time() - last >= 0.9  # a deadline from the last command, not the first
    assert "timeout after NOOP from unknown[127.0.0.1]" in [m.getMessage() for m in caplog.records]


async def test_binary_junk_gets_replies_not_tracebacks(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    c = await run.client()
    await c.send(b"\xff\xfe\x00\x01garbage\r\nMAIL FROM:<\xc3\xa4@example.org>\r\n")
    assert await c.reply() == "500 5.5.2 Error: bad UTF-8 syntax"  # what Postfix answers
    assert await c.reply() == "250 2.1.0 Ok"
    await c.send(b"NOOP\x00\xff trailing junk after a NUL is never read\r\n")
    assert await c.reply() == "250 2.0.0 Ok"
    await c.send(b"\x01\x02garbage\r\n")
    assert await c.reply() == "500 5.5.2 Error: command not recognized"
    assert await c.cmd("GET / HTTP/1.1") == "221 2.7.0 Error: I can break rules, too. Goodbye."
    assert await c.reply() == "<EOF>"


async def test_nats_down_means_451_never_250(nats: ServerProcess) -> None:
    nc = await connect(nats.url, "test")
    await ensure_streams(nc.jetstream())
    js = nc.jetstream()
    async with running_servers(Bus(QueueFile(nc, js), WorkBus(nc, js))) as smtpd:
        await nats_goes_away(await smtpd(), nats)
    with contextlib.suppress(Exception):
        await nc.close()


async def nats_goes_away(run: Running, nats: ServerProcess) -> None:
    run.server.settings.queue_timeout = 2.0
    c = await run.client()
    await c.cmd("EHLO c")
    await c.cmd("MAIL FROM:<s@example.org>")
    await c.cmd("RCPT TO:<u@postbus.test>")
    assert await c.cmd("DATA") == r.DATA_GO_AHEAD
    await asyncio.to_thread(nats.stop)
    await c.send(b"Subject: lost bus\r\n\r\nbody\r\n.\r\n")
    assert await c.reply(timeout=20) == r.QUEUE_WRITE_ERROR
    assert await c.cmd("QUIT") == r.BYE


async def test_undecodable_bytes_without_smtputf8_never_loop_on_451(smtpd: StartSmtpd) -> None:
    """With smtputf8_enable = no bytes that are not UTF-8 reach the parser; an address
    that cannot be queued is refused as bad syntax, a HELO name is kept printable, and a
    message from such a client is queued, not answered 451 forever."""
    run = await smtpd(smtputf8_enable="no")
    c = await run.client()
    await c.send(b"EHLO bad\xffname\r\n")
    assert (await c.reply()).startswith("250-mx.postbus.test")
    await c.send(b"MAIL FROM:<a\xff@example.org>\r\n")
    assert await c.reply() == "501 5.1.7 Bad sender address syntax"
    assert await c.cmd("MAIL FROM:<s@example.org>") == "250 2.1.0 Ok"
    await c.send(b"RCPT TO:<b\xfe@postbus.test>\r\n")
    assert await c.reply() == "501 5.1.3 Bad recipient address syntax"
    assert await c.cmd("RCPT TO:<bob@postbus.test>") == "250 2.1.5 Ok"
    assert await c.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
    reply = await c.cmd("Subject: x\r\n\r\nbody\r\n.")
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    got = await run.store.queue.get(reply.rsplit(" ", 1)[1])
    assert got is not None and got[0].helo == "bad?name"
