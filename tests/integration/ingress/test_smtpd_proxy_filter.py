"""smtpd_proxy_filter through our real smtpd to a real SMTP filter (aiosmtpd on
loopback): the filter's replies are the client's, at RCPT, DATA and end of
data; a filter that stalls past smtpd_proxy_timeout, or cannot be reached,
gets Postfix's warning and ``451 4.3.0``; with speed_adjust the transaction
reaches the filter only once the whole message is in. Nothing is queued by
the proxying smtpd itself."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import REGISTRY

from postbus.servers import free_port
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Running, StartSmtpd

pytestmark = pytest.mark.integration

PROXY_ERROR = "451 4.3.0 Error: queue file write error"
WHATSUP = "from=<s@example.org> to=<a@postbus.test> proto=ESMTP helo=<client.example>"


@dataclass
class Filter:
    """A before-queue filter: refuses rcpt "no@", rejects "Subject: spam", stalls on
    "Subject: stall"; otherwise it takes the message. It offers XFORWARD and keeps
    what it is told."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    xforward: list[str] = field(default_factory=list)
    mails: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE",
                responses[-1]]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        with self.lock:
            self.mails += 1
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address.startswith("no@"):
            return "550 5.1.1 <no@postbus.test>: unknown in the filter"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if b"Subject: stall" in content:
            await asyncio.sleep(6)
        if b"Subject: spam" in content:
            return "554 5.7.1 filtered: spam"
        with self.lock:
            self.messages.append((envelope.mail_from or "", list(envelope.rcpt_tos), content))
        return "250 2.0.0 Ok: queued as FILTERED"


class XforwardSMTP(SMTP):
    async def smtp_XFORWARD(self, arg: str) -> None:
        handler = self.event_handler
        assert isinstance(handler, Filter)
        with handler.lock:
            handler.xforward.append(arg)
        await self.push("250 2.0.0 Ok")


class FilterController(Controller):
    """aiosmtpd with the XFORWARD command."""

    def __init__(self, flt: Filter) -> None:
        super().__init__(flt, hostname="127.0.0.1", port=free_port(), decode_data=False)

    def factory(self) -> SMTP:
        return XforwardSMTP(self.handler, **self.SMTP_kwargs)


@pytest.fixture
def proxy_filter() -> object:
    flt = Filter()
    controller = FilterController(flt)
    controller.start()
    flt.port = controller.port  # type: ignore[attr-defined]
    yield flt
    controller.stop()


async def _start(smtpd: StartSmtpd, port: int, **extra: str) -> Running:
    return await smtpd(**{"smtpd_proxy_filter": f"127.0.0.1:{port}",
                          "smtpd_proxy_timeout": "2s", **extra})


async def _transaction(run: Running, rcpts: list[str], subject: str) -> list[str]:
    client = await run.client()
    assert (await client.cmd("EHLO client.example")).startswith("250-")
    replies = [await client.cmd("MAIL FROM:<s@example.org>")]
    replies += [await client.cmd(f"RCPT TO:<{rcpt}>") for rcpt in rcpts]
    replies.append(await client.cmd("DATA"))
    if replies[-1].startswith("354"):
        await client.send(f"Subject: {subject}\r\n\r\n..dot line\r\nbody\r\n.\r\n")
        replies.append(await client.reply(timeout=30))
    await client.cmd("QUIT")
    return replies


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"postbus_proxy_filter_{name}_total", labels) or 0.0


async def test_the_filter_answers_before_our_250(
        smtpd: StartSmtpd, proxy_filter: Filter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    before = {k: _count("results", result=k) for k in ("accept", "reject")}
    run = await _start(smtpd, proxy_filter.port)  # type: ignore[attr-defined]
    replies = await _transaction(run, ["a@postbus.test", "no@postbus.test"], "hello")
    assert replies == [r.MAIL_OK, r.RCPT_OK,
                       "550 5.1.1 <no@postbus.test>: unknown in the filter",
                       r.DATA_GO_AHEAD, "250 2.0.0 Ok: queued as FILTERED"]
    [(sender, rcpts, content)] = proxy_filter.messages
    assert (sender, rcpts) == ("s@example.org", ["a@postbus.test"])
    [told] = proxy_filter.xforward
    assert re.fullmatch(r"NAME=\[UNAVAILABLE\] ADDR=127\.0\.0\.1 PORT=\d+ "
                        r"HELO=client\.example IDENT=\[UNAVAILABLE\] PROTO=ESMTP "
                        r"SOURCE=LOCAL", told), told  # 127.0.0.1: permit_inet_interfaces
    # our Received: header, without a queue ID (nothing is queued here); dots intact
    received, _, rest = content.partition(b"Subject: hello\r\n")
    assert received.startswith(b"Received: from client.example (unknown [127.0.0.1])\r\n"
                               b"\tby mx.postbus.test (Postbus) with ESMTP\r\n"
                               b"\tfor <a@postbus.test>; ")
    assert rest == b"\r\n.dot line\r\nbody\r\n"
    assert ("proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as FILTERED; "
            + WHATSUP) in caplog.messages
    # the filter's refusal of the content is the client's reply
    replies = await _transaction(run, ["a@postbus.test"], "spam")
    assert replies[-1] == "554 5.7.1 filtered: spam"
    assert "proxy-reject: END-OF-MESSAGE: 554 5.7.1 filtered: spam; " + WHATSUP \
        in caplog.messages
    assert [e.queue_id async for e in run.store.queue.entries()] == []  # queued by none
    assert {k: _count("results", result=k) - before[k] for k in before} == \
        {"accept": 1, "reject": 1}


async def test_a_stalled_filter_times_out(
        smtpd: StartSmtpd, proxy_filter: Filter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    port = proxy_filter.port  # type: ignore[attr-defined]
    run = await _start(smtpd, port, smtpd_proxy_timeout="1s")
    errors, timeouts = _count("results", result="error"), _count("errors", kind="timeout")
    replies = await _transaction(run, ["a@postbus.test"], "stall")
    assert replies[-1] == PROXY_ERROR
    assert (_count("results", result="error") - errors,
            _count("errors", kind="timeout") - timeouts) == (1, 1)
    assert f"timeout talking to proxy 127.0.0.1:{port}" in caplog.messages
    assert f"proxy-reject: END-OF-MESSAGE: {PROXY_ERROR}; {WHATSUP}" in caplog.messages


async def test_a_filter_that_is_not_there(smtpd: StartSmtpd,
                                          caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    run = await _start(smtpd, port)
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await client.cmd("RCPT TO:<a@postbus.test>") == PROXY_ERROR
    assert await client.cmd("DATA") == r.NO_VALID_RECIPIENTS
    assert (f"connect to proxy filter 127.0.0.1:{port}: Connection refused"
            in caplog.messages)


async def test_speed_adjust_sends_the_transaction_at_the_end(
        smtpd: StartSmtpd, proxy_filter: Filter) -> None:
    run = await _start(smtpd, proxy_filter.port,  # type: ignore[attr-defined]
                       smtpd_proxy_options="speed_adjust")
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await client.cmd("RCPT TO:<a@postbus.test>") == r.RCPT_OK
    assert await client.cmd("RCPT TO:<b@postbus.test>") == r.RCPT_OK
    assert await client.cmd("DATA") == r.DATA_GO_AHEAD
    assert proxy_filter.mails == 0  # the filter has seen nothing yet
    await client.send("Subject: fast\r\n\r\nbody\r\n.\r\n")
    assert await client.reply() == "250 2.0.0 Ok: queued as FILTERED"
    [(_sender, rcpts, _content)] = proxy_filter.messages
    assert rcpts == ["a@postbus.test", "b@postbus.test"]
    # a recipient the filter refuses now refuses the message
    assert (await _transaction(run, ["a@postbus.test", "no@postbus.test"], "x"))[-1] == \
        "550 5.1.1 <no@postbus.test>: unknown in the filter"


async def test_bdat_goes_to_the_filter_as_data(smtpd: StartSmtpd, proxy_filter: Filter) -> None:
    run = await _start(smtpd, proxy_filter.port)  # type: ignore[attr-defined]
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await client.cmd("RCPT TO:<a@postbus.test>") == r.RCPT_OK
    first = b"Subject: chunks\r\n\r\n.dot"
    await client.send(f"BDAT {len(first)}\r\n".encode() + first)
    assert await client.reply() == f"250 2.0.0 Ok: {len(first)} bytes"
    last = b" line\r\n"
    await client.send(f"BDAT {len(last)} LAST\r\n".encode() + last)
    assert await client.reply() == "250 2.0.0 Ok: queued as FILTERED"
    [(_sender, _rcpts, content)] = proxy_filter.messages
    assert content.endswith(b"Subject: chunks\r\n\r\n.dot line\r\n")


async def test_what_our_client_forwarded_is_forwarded(
        smtpd: StartSmtpd, proxy_filter: Filter) -> None:
    """An intermediate proxy passes on the XFORWARD attributes it was given."""
    run = await _start(smtpd, proxy_filter.port,  # type: ignore[attr-defined]
                       smtpd_authorized_xforward_hosts="127.0.0.0/8")
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("XFORWARD NAME=mail.example ADDR=192.0.2.7 IDENT=Q1") == \
        "250 2.0.0 Ok"
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await client.cmd("RCPT TO:<a@postbus.test>") == r.RCPT_OK
    assert proxy_filter.xforward == [
        "NAME=mail.example ADDR=192.0.2.7 PORT=[UNAVAILABLE] HELO=[UNAVAILABLE] IDENT=Q1 "
        "PROTO=[UNAVAILABLE] SOURCE=LOCAL"]
