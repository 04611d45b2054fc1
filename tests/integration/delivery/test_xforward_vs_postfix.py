"""smtp_send_xforward_command: the XFORWARD lines delivery-smtp sends before MAIL FROM
are those of Postfix's smtp client (smtp_proto.c) for the same client attributes.

A private Postfix (``smtp_send_xforward_command = yes``) relays a message from
smtplib to an aiosmtpd peer that offers XFORWARD and records the commands; the
lines, with the client port and Postfix's queue ID put as ``<port>`` and
``<qid>``, are recorded in ``tests/data/postfix/smtp_xforward.json``. delivery-smtp
gets a job with the attributes Postfix's smtpd stored (unknown[127.0.0.1]: no DNS,
HELO client.example, ESMTP, a local rewriting context) and must send the same.
"""

from __future__ import annotations

import logging
import re
import smtplib
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from delivery_smtp.__main__ import main
from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.recorded import Recording

from .conftest import Bus, RunAgent
from .peers import Handler, wait_message

pytestmark = pytest.mark.integration

RECORDING = Recording("smtp_xforward")
ALL = "NAME ADDR PROTO HELO SOURCE PORT IDENT"  # what Postfix's smtpd offers
MESSAGE = b"From: alice@client.test\r\nSubject: xforward\r\n\r\nbody\r\n"


class XforwardHandler(Handler):
    """Offers XFORWARD with ``offered`` attribute names; records each XFORWARD command,
    answering ``reply``."""

    def __init__(self, offered: str = ALL, reply: str = "250 2.0.0 Ok",
                 pipelining: bool = False) -> None:
        super().__init__()
        self.offered = offered
        self.pipelining = pipelining
        self.reply = reply
        self.commands: list[str] = []

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        more = [f"250-XFORWARD {self.offered}"] + ["250-PIPELINING"] * self.pipelining
        return [*responses[:-1], *more, responses[-1]]


class XforwardSMTP(SMTP):
    async def smtp_XFORWARD(self, arg: str) -> None:
        handler = self.event_handler
        with handler.lock:
            handler.commands.append(f"XFORWARD {arg}")
        await self.push(handler.reply)


class XforwardLMTP(LMTP):
    smtp_XFORWARD = XforwardSMTP.smtp_XFORWARD


class XforwardPeer:
    def __init__(self, handler: XforwardHandler, lmtp: bool = False) -> None:
        self.handler = handler
        self.port = free_port()

        class _Controller(Controller):
            def factory(self) -> SMTP:
                cls = XforwardLMTP if lmtp else XforwardSMTP
                return cls(self.handler, **self.SMTP_kwargs)

        self.controller = _Controller(handler, hostname="127.0.0.1", port=self.port,
                                      decode_data=False)

    def __enter__(self) -> XforwardPeer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def _normal(lines: list[str]) -> list[str]:
    lines = [re.sub(r"\bPORT=\d+", "PORT=<port>", line) for line in lines]
    return [re.sub(r"\bIDENT=\w+", "IDENT=<qid>", line) for line in lines]


def _postfix_sends(offered: str) -> list[str]:
    """The XFORWARD lines a private Postfix sends to a peer offering ``offered``."""
    handler = XforwardHandler(offered)
    with XforwardPeer(handler) as peer:
        port = free_port()
        instance = postfix_instance.PostfixInstance(port, {
            "myhostname": "mx.postbus.test", "relayhost": f"[127.0.0.1]:{peer.port}",
            "smtp_send_xforward_command": "yes"
        })
        instance.start()
        try:
            wait_port("127.0.0.1", port, 20)
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.example")
                client.sendmail("alice@client.test", ["bob@remote.test"], MESSAGE)
            wait_message(peer)  # type: ignore[arg-type]
        finally:
            instance.stop()
    return _normal(handler.commands)


async def _send(bus: Bus, run_agent: RunAgent, peer: XforwardPeer, send: str = "yes",
                lmtp: bool = False, **job: Any) -> Any:
    name = "lmtp" if lmtp else "smtp"
    await run_agent(main, name, {"myhostname": "mail.postbus.test",
                                 f"{name}_send_xforward_command": send})
    attrs = {"client_name": "unknown", "client_addr": "127.0.0.1", "client_port": "40123",
             "helo": "client.example", "protocol": "ESMTP", "log_ident": "ABCDEF",
             "rewrite_context": "local", **job}
    queued = await bus.submit(name, f"[127.0.0.1]:{peer.port}", ["bob@remote.test"],
                              content=MESSAGE, sender="alice@client.test", job=attrs)
    [result] = (await bus.status(queued.queue_id)).results
    await run_agent.stop()
    return result


@pytest.mark.parametrize("case, offered, pipelining", [
    ("all attributes", ALL, False), ("all attributes", ALL, True),
    ("name and helo only", "NAME HELO", False),
])
async def test_xforward_lines_as_postfix_sends_them(
    bus: Bus, run_agent: RunAgent, case: str, offered: str, pipelining: bool
) -> None:
    """Pipelined (aiosmtpd reads commands one by one either way) or not, the same lines."""
    live = (lambda: _postfix_sends(offered)) if postfix_instance.available() else None
    postfix = RECORDING.answer(case, live)
    handler = XforwardHandler(offered, pipelining=pipelining)
    with XforwardPeer(handler) as peer:
        result = await _send(bus, run_agent, peer)
    assert result.status == "sent"
    assert _normal(handler.commands) == postfix
    assert len(handler.messages) == 1


async def test_local_submission_known_name_ipv6_and_remote(bus: Bus, run_agent: RunAgent) -> None:
    """Local submissions have no client: only SOURCE=LOCAL (qmgr_message.c's presets);
    a known client name is sent, IPv6 as smtpd's rfc_addr, values in xtext;
    SOURCE=REMOTE for the remote context."""
    handler = XforwardHandler()
    with XforwardPeer(handler) as peer:
        await _send(bus, run_agent, peer, protocol="sendmail", rewrite_context="")
        await _send(bus, run_agent, peer, client_name="mx.client.test", rewrite_context="remote",
                    client_addr="2001:db8::1", log_ident="ORIG+ID")
    assert handler.commands == [
        "XFORWARD SOURCE=LOCAL",
        "XFORWARD NAME=mx.client.test ADDR=IPv6:2001:db8::1 PORT=40123",
        "XFORWARD PROTO=ESMTP HELO=client.example IDENT=ORIG+2BID SOURCE=REMOTE",
    ]
    assert len(handler.messages) == 2


async def test_not_sent_unless_configured_and_refusal_is_a_warning(
    bus: Bus, run_agent: RunAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    handler = XforwardHandler(reply="550 5.7.0 Error: insufficient authorization")
    with XforwardPeer(handler) as peer:
        result = await _send(bus, run_agent, peer, send="no")
        assert (result.status, handler.commands) == ("sent", [])
        result = await _send(bus, run_agent, peer)
    assert result.status == "sent"  # Postfix warns and delivers
    assert len(handler.commands) == 2 and len(handler.messages) == 2
    assert (f"host 127.0.0.1[127.0.0.1]:{peer.port} said: 550 5.7.0 Error: insufficient "
            "authorization (in reply to XFORWARD name/address command)") in [
        r.getMessage() for r in caplog.records]


async def test_lmtp_sends_xforward_with_its_own_parameter(bus: Bus, run_agent: RunAgent) -> None:
    """lmtp_send_xforward_command, not smtp_'s, for the lmtp transport."""
    handler = XforwardHandler()
    with XforwardPeer(handler, lmtp=True) as peer:
        result = await _send(bus, run_agent, peer, lmtp=True, client_name="mx.client.test")
    assert result.status == "sent"
    assert handler.commands == [
        "XFORWARD NAME=mx.client.test ADDR=127.0.0.1 PORT=40123",
        "XFORWARD PROTO=ESMTP HELO=client.example IDENT=ABCDEF SOURCE=LOCAL",
    ]
