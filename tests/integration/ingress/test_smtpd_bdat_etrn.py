"""BDAT into the real queue, ETRN through the bus, EHLO keywords taken away by parameter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from ingress_smtpd.etrn import flush_over_bus
from ingress_smtpd.server import SmtpServer
from postbus.bus import subjects
from postbus.bus.jetstream import connect
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry
from postbus.servers import ServerProcess
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Client, Running, StartSmtpd, make_config

pytestmark = pytest.mark.integration


async def queued(run: Running) -> list[tuple[QueueEntry, bytes]]:
    out = []
    async for entry in run.store.queue.entries():
        out.append((entry, await run.store.queue.content(entry.queue_id, entry.chunks)))
    return out


async def transaction(c: Client) -> None:
    assert (await c.cmd("EHLO c")).endswith("250 CHUNKING")
    assert await c.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await c.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK


async def test_a_large_message_in_many_pipelined_chunks(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    c = await run.client()
    await transaction(c)
    body = b"".join(b"line %06d of the message\r\n" % i for i in range(40000))  # ~1 MB
    message = b"Subject: chunks\r\n\r\n" + body
    pieces = [message[i:i + 65536] for i in range(0, len(message), 65536)]
    batch = b"".join(b"BDAT %d%s\r\n%s" % (len(p), b" LAST" if i == len(pieces) - 1 else b"", p)
                     for i, p in enumerate(pieces))
    await c.send(batch)  # every chunk at once, as a pipelining client sends them
    for piece in pieces[:-1]:
        assert await c.reply() == f"250 2.0.0 Ok: {len(piece)} bytes"
    last = await c.reply()
    assert last.startswith(f"250 2.0.0 Ok: {len(message)} bytes queued as ")
    [(entry, content)] = await queued(run)
    assert last.endswith(entry.queue_id)
    assert content.endswith(b"\r\n\r\n" + body) and b"Subject: chunks\r\n" in content
    assert b"with ESMTP id " + entry.queue_id.encode() in content


async def test_nothing_is_queued_from_a_chunk_cut_short(smtpd: StartSmtpd) -> None:
    run = await smtpd(smtpd_timeout="1s")
    c = await run.client()
    await transaction(c)
    await c.send(b"BDAT 100 LAST\r\nSubject: short\r\n\r\nonly this")
    assert await c.reply() == "421 4.4.2 mx.postbus.test Error: timeout exceeded"
    c = await run.client()
    await transaction(c)
    await c.send(b"BDAT 100 LAST\r\nSubject: cut\r\n")
    await c.close()
    c = await run.client()  # the server is still there, and queued neither
    assert await c.cmd("QUIT") == r.BYE
    assert await queued(run) == []


async def test_a_chunk_far_over_the_size_limit_is_not_read(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    run = await smtpd(message_size_limit="10000")
    c = await run.client()
    await transaction(c)
    await c.send(b"BDAT 1000000000000 LAST\r\n" + b"x" * 1000)
    assert await c.reply() == r.BDAT_CHUNK_TOO_BIG
    assert await c.reply() == "<EOF>"
    assert "too much BDAT content -- disabling further input from unknown[127.0.0.1]" \
        in caplog.text
    assert await queued(run) == []


@pytest.fixture
async def etrn_server(
    store: Bus, nats: ServerProcess
) -> AsyncIterator[Callable[[], Any]]:
    nc = await connect(nats.url, "smtpd")
    server = SmtpServer(make_config(fast_flush_domains="flush.example"), _no_queue,
                        listener="test", flush=flush_over_bus(nc))
    port = (await server.start("127.0.0.1", 0))[0][1]
    clients: list[Client] = []

    async def client() -> Client:
        c = await Client.connect(port)
        clients.append(c)
        assert (await c.reply()).startswith("220 ")
        return c

    yield client
    for c in clients:
        await c.close()
    await server.stop(grace=1.0)
    await nc.close()


async def _no_queue(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
    raise AssertionError("nothing to queue here")


async def test_etrn_without_a_flush_service_is_458(
    etrn_server: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    c = await etrn_server()
    await c.cmd("EHLO c")
    assert await c.cmd("ETRN flush.example") == r.ETRN_UNABLE
    assert "warning: unable to talk to fast flush service" in [
        ("warning: " if rec.levelno == logging.WARNING else "") + rec.getMessage()
        for rec in caplog.records]
    assert await c.cmd("ETRN other.example") == "459 <other.example>: service unavailable"


@pytest.mark.parametrize(("answer", "reply", "line"), [
    (b'{"status": "ok", "deferred": 3}', "250 Queuing started", None),
    (b"anything", "458 Unable to queue messages", "unable to talk to fast flush service"),
    (b'{"status": "deny"}', "459 <flush.example>: service unavailable",
     "reject: ETRN flush.example... from unknown[127.0.0.1]"),
    (b'{"status": "bad"}', "458 Unable to queue messages",
     "bad ETRN flush.example... from unknown[127.0.0.1]"),
])
async def test_etrn_replies_follow_the_flush_service(
    etrn_server: Callable[[], Any], nats: ServerProcess, caplog: pytest.LogCaptureFixture,
    answer: bytes, reply: str, line: str | None,
) -> None:
    nc = await connect(nats.url, "qmgr-standin")
    asked: list[Any] = []

    async def serve(msg: Any) -> None:
        asked.append(orjson.loads(msg.data))
        await msg.respond(answer)

    await nc.subscribe(subjects.command_subject("send_site"), cb=serve)
    await nc.flush()
    caplog.set_level(logging.INFO, "postbus.smtpd")
    c = await etrn_server()
    await c.cmd("EHLO c")
    assert await c.cmd("ETRN #flush.example") == reply
    assert asked == [{"site": "flush.example"}]
    if line is not None:
        assert line in caplog.text
    await nc.close()


async def test_discarded_keywords_are_refused_too(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    run = await smtpd(smtpd_discard_ehlo_keywords="starttls, dsn, chunking, pipelining",
                      smtpd_tls_security_level="may")
    c = await run.client()
    ehlo = await c.cmd("EHLO c")
    assert ehlo == ("250-mx.postbus.test\n250-SIZE 10240000\n250-VRFY\n250-ETRN\n"
                    "250-ENHANCEDSTATUSCODES\n250-8BITMIME\n250 SMTPUTF8")
    assert "discarding EHLO keywords: PIPELINING STARTTLS DSN CHUNKING" in caplog.text
    assert await c.cmd("STARTTLS") == r.NOT_IMPLEMENTED
    assert await c.cmd("MAIL FROM:<s@example.org> ENVID=x") == r.DSN_DISABLED
    assert await c.cmd("BDAT 1 LAST") == r.BDAT_DISABLED
    assert await c.reply() == "<EOF>"
