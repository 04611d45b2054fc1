"""Messages accepted by our smtpd land in JetStream before the 250, with Postfix's headers."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from ingress_smtpd.server import main
from postbus.config.loader import Config
from postbus.queue.ids import is_queue_id
from postbus.servers import ServerProcess, free_port
from postbus.service import ServiceContext
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import BASE_MAIN_CF, Running, StartSmtpd

pytestmark = pytest.mark.integration

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")


async def send_one(run: Running, sender: str, rcpts: list[str], body: bytes) -> str:
    client = await run.client()
    assert (await client.cmd("EHLO client.example")).startswith("250-mx.postbus.test")
    assert await client.cmd(f"MAIL FROM:<{sender}>") == r.MAIL_OK
    for rcpt in rcpts:
        assert await client.cmd(f"RCPT TO:<{rcpt}>") == r.RCPT_OK
    assert await client.cmd("DATA") == r.DATA_GO_AHEAD
    await client.send(body + b".\r\n")
    reply = await client.reply()
    assert await client.cmd("QUIT") == r.BYE
    await client.close()
    return reply


async def test_accepted_message_is_in_the_queue(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # postbus.smtpd and postbus.cleanup
    run = await smtpd()
    body = b"Subject: hello\r\n\r\nline 1\r\n..dotted\r\nbare\nlf\r\n"
    reply = await send_one(run, "s@example.org", ["user@postbus.test"], body)
    match = QUEUED.match(reply)
    assert match, reply
    qid = match.group(1)
    assert is_queue_id(qid) and len(qid) == 11
    got = await run.store.queue.get(qid)
    assert got is not None
    entry, _ = got
    assert entry.sender == "s@example.org"
    assert [x.address for x in entry.recipients] == ["user@postbus.test"]
    assert entry.recipients[0].orig_rcpt == "user@postbus.test"
    assert (entry.client_name, entry.client_addr, entry.helo) == ("unknown", "127.0.0.1",
                                                                  "client.example")
    assert entry.protocol == "ESMTP"
    content = await run.store.queue.content(qid, entry.chunks)
    assert entry.size == len(content)
    head, _, rest = content.partition(b"\r\nSubject: hello\r\n")
    assert re.fullmatch(
        rb"Received: from client\.example \(unknown \[127\.0\.0\.1\]\)\r\n"
        rb"\tby mx\.postbus\.test \(Postbus\) with ESMTP id " + qid.encode() + rb"\r\n"
        rb"\tfor <user@postbus\.test>; "
        rb"\w{3}, [ 1-3]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)",
        head,
    ), head
    # 127.0.0.1 is one of inet_interfaces: cleanup adds the missing headers at the end
    headers, _, body_out = rest.partition(b"\r\n\r\n")
    assert headers.startswith(b"Message-Id: <")
    assert qid.encode() + b"@mx.postbus.test>" in headers
    assert b"\r\nDate: " in headers and headers.endswith(b"\r\nFrom: s@example.org")
    assert body_out == b"line 1\r\n.dotted\r\nbare\r\nlf\r\n"
    assert entry.message_id.startswith("<") and qid in entry.message_id
    lines = [rec.getMessage() for rec in caplog.records]
    assert "connect from unknown[127.0.0.1]" in lines
    assert f"{qid}: client=unknown[127.0.0.1]" in lines
    assert f"{qid}: message-id={entry.message_id}" in lines
    assert (
        "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
        in lines
    )


async def test_received_header_without_for_when_many_recipients(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    body = b"Message-ID: <given@example.org>\r\nDate: x\r\nFrom: a@b\r\n\r\nbody\r\n"
    reply = await send_one(run, "", ["a@postbus.test", "b@localhost"], body)
    qid = QUEUED.match(reply).group(1)  # type: ignore[union-attr]
    entry, _ = await run.store.queue.get(qid)  # type: ignore[misc]
    content = await run.store.queue.content(qid, entry.chunks)
    first = content.split(b"\r\n")[:3]
    assert first[1].endswith(b" with ESMTP id " + qid.encode() + b";")
    assert first[2].startswith(b"\t") and b"for <" not in content
    assert content.endswith(body)  # nothing added: the headers are there
    assert entry.sender == "" and entry.message_id == "<given@example.org>"
    assert len(entry.recipients) == 2


async def test_long_queue_ids(smtpd: StartSmtpd) -> None:
    run = await smtpd(enable_long_queue_ids="yes")
    reply = await send_one(run, "s@example.org", ["u@postbus.test"], b"x\r\n")
    qid = QUEUED.match(reply).group(1)  # type: ignore[union-attr]
    assert "z" in qid and len(qid) > 12 and is_queue_id(qid)
    assert await run.store.queue.get(qid) is not None


async def test_dsn_parameters_are_kept(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    client = await run.client()
    await client.cmd("EHLO c")
    assert await client.cmd("MAIL FROM:<s@example.org> RET=HDRS ENVID=id+2Bx SIZE=100") == r.MAIL_OK
    assert await client.cmd(
        "RCPT TO:<u@postbus.test> NOTIFY=success,failure ORCPT=rfc822;orig+40x@example.org"
    ) == r.RCPT_OK
    assert await client.cmd("RCPT TO:<\"a b\"@postbus.test> NOTIFY=NEVER") == r.RCPT_OK
    await client.cmd("DATA")
    await client.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
    qid = QUEUED.match(await client.reply()).group(1)  # type: ignore[union-attr]
    entry, _ = await run.store.queue.get(qid)  # type: ignore[misc]
    assert (entry.ret, entry.env_id) == ("HDRS", "id+x")
    first, second = entry.recipients
    assert (first.notify, first.orig_rcpt) == ("SUCCESS,FAILURE", "orig@x@example.org")
    assert (second.address, second.notify) == ("a b@postbus.test", "NEVER")
    await client.close()


async def test_mail_from_mynetworks_may_relay(smtpd: StartSmtpd) -> None:
    outside = await smtpd()
    client = await outside.client()
    await client.cmd("HELO c")
    await client.cmd("MAIL FROM:<s@example.org>")
    assert await client.cmd("RCPT TO:<x@elsewhere.example>") == (
        "454 4.7.1 <x@elsewhere.example>: Relay access denied"
    )
    await client.close()
    inside = await smtpd(mynetworks="127.0.0.0/8")
    reply = await send_one(inside, "s@example.org", ["x@elsewhere.example"], b"x\r\n")
    assert QUEUED.match(reply)


async def test_main_listens_on_the_master_cf_address(nats: ServerProcess) -> None:
    """The service entry point: master.cf address, ready flag, drain on stop."""
    port = free_port()
    settings = {**BASE_MAIN_CF, "postbus_nats_url": nats.url}
    cfg = Config.from_text(
        "".join(f"{k} = {v}\n" for k, v in settings.items()),
        f"127.0.0.1:{port} inet n - n - - smtpd\n",
        service=f"127.0.0.1:{port}",
    )
    from postbus.bus.jetstream import connect, ensure_streams
    from postbus.queue.file import QueueFile

    nc = await connect(nats.url, "test")
    await ensure_streams(nc.jetstream())
    ctx = ServiceContext(cfg=cfg, program="smtpd", service=f"127.0.0.1:{port}", nc=nc,
                         queue_file=QueueFile(nc, nc.jetstream()))
    task = asyncio.create_task(main(ctx))
    for _ in range(100):
        if ctx.ready:
            break
        await asyncio.sleep(0.02)
    assert ctx.ready
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readline() == b"220 mx.postbus.test ESMTP Postbus\r\n"
    writer.write(b"QUIT\r\n")
    assert await reader.readline() == b"221 2.0.0 Bye\r\n"
    writer.close()
    ctx.stopping.set()
    await asyncio.wait_for(task, 10)
    await nc.close()
