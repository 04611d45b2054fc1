"""XFORWARD from an authorized filter: what it changes in the queue entry and the
``client=`` line (the dialogue's replies are compared with Postfix in
test_smtpd_filter_vs_postfix), and that it lasts one transaction only."""

from __future__ import annotations

import logging
import re

import pytest

from postbus.smtp import replies as r
from tests.integration.ingress.conftest import StartSmtpd

pytestmark = pytest.mark.integration

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")


async def test_forwarded_client_is_the_messages_client(
        smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    run = await smtpd(smtpd_authorized_xforward_hosts="127.0.0.0/8",
                      remote_header_rewrite_domain="")
    client = await run.client()
    await client.cmd("EHLO filter.example")
    assert await client.cmd("XFORWARD NAME=mail.example ADDR=192.0.2.7 PORT=4567 "
                            "HELO=outside.example PROTO=ESMTP SOURCE=REMOTE "
                            "IDENT=ABC123") == "250 2.0.0 Ok"
    qids = []
    for _ in range(2):  # the second transaction is the filter's own again
        assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
        assert await client.cmd("RCPT TO:<a@postbus.test>") == r.RCPT_OK
        assert await client.cmd("DATA") == r.DATA_GO_AHEAD
        await client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        match = QUEUED.match(await client.reply())
        assert match
        qids.append(match.group(1))
    await client.cmd("QUIT")
    first = await run.store.queue.get(qids[0])
    second = await run.store.queue.get(qids[1])
    assert first is not None and second is not None
    e = first[0]
    assert (e.client_name, e.client_addr, e.helo, e.protocol) == (
        "mail.example", "192.0.2.7", "outside.example", "ESMTP")
    # what our own smtp client forwards from here (smtp_send_xforward_command)
    assert (e.client_port, e.log_ident, e.rewrite_context) == ("4567", "ABC123", "remote")
    e = second[0]
    assert (e.client_name, e.client_addr, e.helo) == ("unknown", "127.0.0.1", "filter.example")
    assert e.client_port.isdigit() and (e.log_ident, e.rewrite_context) == ("", "")
    assert (f"{qids[0]}: client=unknown[127.0.0.1], orig_queue_id=ABC123, "
            "orig_client=mail.example[192.0.2.7]") in caplog.messages
    assert f"{qids[1]}: client=unknown[127.0.0.1]" in caplog.messages
    # SOURCE=REMOTE: no header rewriting context without remote_header_rewrite_domain,
    # so no Message-Id: is added; the filter's own (local) session adds one
    content = await run.store.queue.content(qids[0], first[0].chunks)
    assert b"Message-Id:" not in content
    content = await run.store.queue.content(qids[1], second[0].chunks)
    assert b"Message-Id:" in content
