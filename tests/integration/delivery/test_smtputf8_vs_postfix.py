"""SMTPUTF8 as the sender asked for it (MAIL FROM ... SMTPUTF8), as Postfix's smtp client
decides (smtp_proto.c): MAIL FROM says SMTPUTF8 when it was requested and the server
offers it, even for an all-ASCII envelope; a message that requested it and has a
non-ASCII header needs it, and bounces at a server without it. The queue entry's
``smtputf8`` reaches the job (qmgr) and the agent.

A private Postfix gets each message from smtplib with SMTPUTF8 and relays it to an
aiosmtpd peer; its MAIL FROM parameters, or its bounce reason, are recorded in
``tests/data/postfix/smtp_smtputf8.json``.
"""

from __future__ import annotations

import re
import smtplib
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from delivery_smtp.__main__ import main
from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.recorded import Recording

from .conftest import Bus, RunAgent
from .peers import Handler, Peer, wait_log, wait_message

pytestmark = pytest.mark.integration

RECORDING = Recording("smtp_smtputf8")
ASCII = b"From: alice@client.test\r\nSubject: plain\r\n\r\nbody\r\n"
UTF8_HEADER = b"From: alice@client.test\r\nSubject: caf\xc3\xa9\r\n\r\nbody\r\n"


class MailOptions(Handler):
    """Records MAIL FROM parameters; without SMTPUTF8 unless ``smtputf8``."""

    def __init__(self, smtputf8: bool) -> None:
        super().__init__()
        self.smtputf8 = smtputf8
        self.mail_options: list[list[str]] = []

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [r for r in responses if self.smtputf8 or r != "250-SMTPUTF8"]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.mail_options.append([o for o in options if not o.startswith("SIZE=")])
        return "250 2.1.0 Ok"


def _postfix(content: bytes, smtputf8: bool) -> Any:
    """What Postfix's smtp client does with ``content`` sent with SMTPUTF8: the MAIL FROM
    parameters it sends, or its reason for bouncing."""
    handler = MailOptions(smtputf8)
    with Peer(handler) as peer:
        port = free_port()
        instance = postfix_instance.PostfixInstance(port, {
            "myhostname": "mx.postbus.test", "relayhost": f"[127.0.0.1]:{peer.port}",
        })
        instance.start()
        try:
            wait_port("127.0.0.1", port, 20)
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.example")
                client.sendmail("alice@client.test", ["bob@remote.test"], content,
                                mail_options=["SMTPUTF8"])
            if smtputf8:
                wait_message(peer)
                return handler.mail_options[0]
            line = wait_log(instance.maillog, r"to=<bob@remote.test>.*status=bounced \(.*\)$")
        finally:
            instance.stop()
    return re.sub(r":\d+\b", "", line.split("status=bounced ", 1)[1])


async def _send(bus: Bus, run_agent: RunAgent, peer: Peer, content: bytes) -> Any:
    await run_agent(main, "smtp", {"myhostname": "mail.postbus.test"})
    job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"],
                           content=content, sender="alice@client.test", smtputf8=True,
                           job={"smtputf8": True})
    [result] = (await bus.status(job.queue_id)).results
    await run_agent.stop()
    return result


async def test_requested_smtputf8_is_said_for_an_ascii_message(
    bus: Bus, run_agent: RunAgent
) -> None:
    live = (lambda: _postfix(ASCII, True)) if postfix_instance.available() else None
    postfix = RECORDING.answer("ascii message, server with SMTPUTF8", live)
    handler = MailOptions(smtputf8=True)
    with Peer(handler) as peer:
        result = await _send(bus, run_agent, peer, ASCII)
    assert result.status == "sent"
    assert handler.mail_options == [postfix]
    assert "SMTPUTF8" in postfix


async def test_a_non_ascii_header_needs_smtputf8_when_requested(
    bus: Bus, run_agent: RunAgent
) -> None:
    live = (lambda: _postfix(UTF8_HEADER, False)) if postfix_instance.available() else None
    postfix = RECORDING.answer("utf-8 header, server without SMTPUTF8", live)
    handler = MailOptions(smtputf8=False)
    with Peer(handler) as peer:
        result = await _send(bus, run_agent, peer, UTF8_HEADER)
        assert (result.status, result.dsn) == ("bounced", "5.6.7")
        assert f"({result.reason})" == postfix
        assert handler.messages == []
        # not requested: the same message goes as it is (Postfix: no SMTPUTF8_FLAG_REQUESTED)
        await run_agent(main, "smtp", {"myhostname": "mail.postbus.test"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"],
                               content=UTF8_HEADER, sender="alice@client.test")
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert result.status == "sent"
    assert handler.mail_options[-1] == ["BODY=8BITMIME"]
