"""8BITMIME: a server without it gets 8bit entities as quoted-printable, as Postfix 3.7's
smtp client sends them (mime_state.c's downgrade); SMTPUTF8 mail that such a server
cannot take bounces with Postfix's text.

A private Postfix relays MESSAGE to an aiosmtpd peer that does not announce 8BITMIME;
what arrives, less the Received: header Postfix adds, is recorded in
``tests/data/postfix/smtp_8bitmime.json``. delivery-smtp must send the same octets.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from delivery_smtp.__main__ import main
from tests import postfix_instance
from tests.recorded import Recording

from .conftest import Bus, RunAgent
from .peers import Handler, Peer, postfix_relays

pytestmark = pytest.mark.integration

RECORDING = Recording("smtp_8bitmime")

MESSAGE = (
    b"From: alice@client.test\r\nTo: bob@remote.test\r\nSubject: caf\xc3\xa9 menu\r\n"
    b"Message-ID: <8bit@client.test>\r\nDate: Mon, 30 Nov 2026 05:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed;\r\n\tboundary="==outer=="\r\n'
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"This is a MIME message with caf\xc3\xa9 in the preamble.\r\n"
    b"--==outer==\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"Cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e = 5\xe2\x82\xac, tab\tand trailing space \r\n"
    b"trailing tab\t\r\n"
    + b"long " * 30 + b"\xc3\xa9\r\n"
    + b"x" * 71 + b"\xc3\xa9\xc3\xa9\r\n"
    b".a leading dot\r\n\r\n"
    b"--==outer==\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n"
    b"no encoding header: caf\xe9 stays as it is\r\n"
    b"--==outer==\r\n"
    b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"From: carol@client.test\r\nSubject: nested\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: binary\r\n\r\n"
    b"nested na\xc3\xafve\r\n"
    b"--==outer==\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAECAwQ=\r\n"
    b"--==outer==--\r\n"
    b"epilogue \xc3\xa9\r\n"
)


class NoEightBit(Handler):
    """aiosmtpd that does not announce 8BITMIME (an old server), nor SMTPUTF8 unless
    ``smtputf8`` (Postfix takes SMTPUTF8 to imply 8BITMIME)."""

    def __init__(self, smtputf8: bool = False) -> None:
        super().__init__()
        self.smtputf8 = smtputf8
        self.mail_options: list[list[str]] = []

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        drop = {"250-8BITMIME"} | (set() if self.smtputf8 else {"250-SMTPUTF8"})
        return [r for r in responses if r not in drop]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.mail_options.append(options)
        return "250 2.1.0 Ok"


def _postfix_relays(smtputf8: bool = False) -> list[str]:
    """What Postfix sends of MESSAGE to a server without 8BITMIME, after its Received:."""
    return postfix_relays(NoEightBit(smtputf8), MESSAGE, ["BODY=8BITMIME"])[0]


async def _send(bus: Bus, run_agent: RunAgent, peer: Peer, content: bytes = MESSAGE,
                recipient: str = "bob@remote.test", **settings: str) -> Any:
    await run_agent(main, "smtp", {"myhostname": "mail.postbus.test", **settings})
    job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", [recipient], content=content,
                           sender="alice@client.test")
    [result] = (await bus.status(job.queue_id)).results
    await run_agent.stop()
    return result


async def test_eight_bit_entities_are_downgraded_as_postfix_does(
    bus: Bus, run_agent: RunAgent
) -> None:
    live = _postfix_relays if postfix_instance.available() else None
    postfix = RECORDING.answer("downgrade", live)
    handler = NoEightBit()
    with Peer(handler) as peer:
        result = await _send(bus, run_agent, peer)
    assert result.status == "sent"
    [(_, _, content)] = peer.handler.messages
    assert content.decode("latin-1").split("\r\n") == postfix
    assert handler.mail_options == [[]]  # no BODY=8BITMIME, and no SIZE: it changed
    assert "Content-Transfer-Encoding: quoted-printable" in postfix  # the case is a real one


async def test_smtputf8_counts_as_8bitmime_as_in_postfix(
    bus: Bus, run_agent: RunAgent, caplog: pytest.LogCaptureFixture
) -> None:
    live = (lambda: _postfix_relays(smtputf8=True)) if postfix_instance.available() else None
    postfix = RECORDING.answer("smtputf8 without 8bitmime", live)
    caplog.set_level(logging.INFO, "postbus.delivery")
    with Peer(NoEightBit(smtputf8=True)) as peer:
        result = await _send(bus, run_agent, peer)
    assert result.status == "sent"
    [(_, _, content)] = peer.handler.messages
    assert content.decode("latin-1").split("\r\n") == postfix
    assert content == MESSAGE
    assert "host 127.0.0.1[127.0.0.1] offers SMTPUTF8 support, but not 8BITMIME" in [
        r.getMessage() for r in caplog.records]


async def test_without_conversion_or_with_8bitmime_the_octets_go_as_they_are(
    bus: Bus, run_agent: RunAgent
) -> None:
    with Peer(NoEightBit()) as peer:
        result = await _send(bus, run_agent, peer, disable_mime_output_conversion="yes")
    assert result.status == "sent"
    [(_, _, content)] = peer.handler.messages
    assert content == MESSAGE
    with Peer() as peer:
        result = await _send(bus, run_agent, peer)
    assert result.status == "sent"
    [(_, _, content)] = peer.handler.messages
    assert content == MESSAGE


async def test_smtputf8_needed_but_not_offered_bounces(bus: Bus, run_agent: RunAgent) -> None:
    with Peer(NoEightBit()) as peer:
        result = await _send(bus, run_agent, peer, recipient="j\u00f8rn@remote.test")
    assert (result.status, result.dsn, result.reason) == (
        "bounced", "5.6.7", "SMTPUTF8 is required, but was not offered by host "
        "127.0.0.1[127.0.0.1]")
    assert peer.handler.messages == []
