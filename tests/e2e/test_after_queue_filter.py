"""After-queue content filtering end to end, as FILTER_README's amavis-style setup:
content_filter (or a FILTER action) sends the message over SMTP to a filter,
which adds a header and re-injects it on a second smtpd listener that has
``-o content_filter=`` and ``-o receive_override_options=no_header_body_checks,
no_milters``; the sink behind relayhost sees one copy, with the header.
HOLD and REDIRECT answers of an access table apply to the whole message."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from postbus.servers import free_port
from tests.e2e.peers import Peer
from tests.harness import MASTER_CF, MailSystem

pytestmark = pytest.mark.e2e

ACCESS = """\
hold@remote.test HOLD
redirect@remote.test REDIRECT boss@remote.test
scan@remote.test FILTER smtp:[127.0.0.1]:{port}
"""
HEADER_CHECKS = "/^Subject: scan me/ FILTER smtp:[127.0.0.1]:{port}\n/^Subject:/ WARN seen\n"


@dataclass
class ReinjectingFilter:
    """A content filter (amavisd's part): the header added, the message sent on to the
    re-injection listener, and that listener's answer given to the sender."""

    port: int
    seen: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = b"X-Filtered: yes\r\n" + (envelope.original_content or b"")
        self.seen.append(list(envelope.rcpt_tos))
        try:
            await asyncio.to_thread(self._send, envelope.mail_from or "",
                                    list(envelope.rcpt_tos), content)
        except smtplib.SMTPException as exc:
            return f"451 4.3.0 re-injection failed: {exc}"
        return "250 2.0.0 Ok: filtered and re-injected"

    def _send(self, sender: str, rcpts: list[str], content: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(sender, rcpts, content)


def _system(tmp_path: Path, sink: int, reinject: int, filter_port: int,
            content_filter: bool) -> MailSystem:
    (tmp_path / "access").write_text(ACCESS.format(port=filter_port))
    (tmp_path / "header_checks").write_text(HEADER_CHECKS.format(port=filter_port))
    main = {
        "relayhost": f"[127.0.0.1]:{sink}",
        "header_checks": f"regexp:{tmp_path}/header_checks",
        "smtpd_recipient_restrictions": f"check_recipient_access texthash:{tmp_path}/access, "
                                        "permit_mynetworks, reject_unauth_destination",
    }
    if content_filter:
        main["content_filter"] = f"smtp:[127.0.0.1]:{filter_port}"
    master = MASTER_CF + (
        f"127.0.0.1:{reinject} inet n - n - - smtpd\n"
        "  -o content_filter=\n"
        "  -o receive_override_options=no_header_body_checks,no_milters\n"
        "  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n")
    return MailSystem(tmp_path / "sys", main, master).start()


def _message(subject: str) -> str:
    return f"From: a@client.test\r\nSubject: {subject}\r\n\r\nbody\r\n"


def test_content_filter_reinjects_once_with_the_filters_header(tmp_path: Path) -> None:
    reinject = free_port()
    flt = ReinjectingFilter(reinject)
    controller = Controller(flt, hostname="127.0.0.1", port=free_port(), decode_data=False)
    controller.start()
    try:
        with Peer() as sink:
            system = _system(tmp_path, sink.port, reinject, controller.port, True)
            try:
                qid = system.send("a@client.test", ["x@remote.test"], _message("amavis"))
                got = system.wait_for(lambda: sink.handler.messages, timeout=30)
                assert got, system.maillog.read_text()
                assert system.wait_for(system.quiet, timeout=30)
                log = system.maillog.read_text()
                assert len(sink.handler.messages) == 1, log
                msg = sink.handler.messages[0]
                assert msg.recipients == ["x@remote.test"]
                assert msg.content.count(b"X-Filtered: yes\r\n") == 1
                assert flt.seen == [["x@remote.test"]]
                # the first hop went to the filter; the re-injected copy to the sink
                assert (f"{qid}: to=<x@remote.test>, relay=127.0.0.1[127.0.0.1]:"
                        f"{controller.port}, ") in log, log
                assert "status=sent (250 2.0.0 Ok: filtered and re-injected)" in log
                # header_checks ran once: not again on the re-injection listener
                assert log.count(": warning: header Subject: amavis from ") == 1, log
            finally:
                system.stop()
    finally:
        controller.stop()


def test_filter_hold_and_redirect_actions(tmp_path: Path) -> None:
    reinject = free_port()
    flt = ReinjectingFilter(reinject)
    controller = Controller(flt, hostname="127.0.0.1", port=free_port(), decode_data=False)
    controller.start()
    try:
        with Peer() as sink:
            system = _system(tmp_path, sink.port, reinject, controller.port, False)
            try:
                # FILTER from an access table, and from header_checks
                system.send("a@client.test", ["scan@remote.test"], _message("one"))
                system.send("a@client.test", ["y@remote.test"], _message("scan me"))
                # REDIRECT: the message goes to the one address instead
                system.send("a@client.test", ["redirect@remote.test"], _message("two"))
                # HOLD: queued on hold, postqueue -p marks it with "!"
                held = system.send("a@client.test", ["hold@remote.test", "z@remote.test"],
                                   _message("three"))
                got = system.wait_for(lambda: len(sink.handler.messages) >= 3, timeout=30)
                log = system.maillog.read_text()
                assert got, log
                by_rcpt = {tuple(m.recipients): m for m in sink.handler.messages}
                assert set(by_rcpt) == {("scan@remote.test",), ("y@remote.test",),
                                        ("boss@remote.test",)}, log
                assert b"X-Filtered: yes" in by_rcpt[("scan@remote.test",)].content
                assert b"X-Filtered: yes" in by_rcpt[("y@remote.test",)].content
                assert b"X-Filtered" not in by_rcpt[("boss@remote.test",)].content
                assert sorted(flt.seen) == [["scan@remote.test"], ["y@remote.test"]]
                listing = system.postbus("postqueue", "-p").stdout
                assert f"{held}!" in listing, listing
                assert ("NOQUEUE: hold: RCPT from unknown[127.0.0.1]: <hold@remote.test>: "
                        "Recipient address triggers HOLD action; from=<a@client.test> "
                        "to=<hold@remote.test> proto=ESMTP helo=<client.postbus.test>") in log
                assert ("NOQUEUE: filter: RCPT from unknown[127.0.0.1]: <scan@remote.test>: "
                        "Recipient address triggers FILTER smtp:[127.0.0.1]:"
                        f"{controller.port}; from=<a@client.test> to=<scan@remote.test> "
                        "proto=ESMTP helo=<client.postbus.test>") in log
                assert "<redirect@remote.test>: Recipient address triggers REDIRECT " \
                       "boss@remote.test; from=<a@client.test>" in log
                assert ": filter: header Subject: scan me from unknown[127.0.0.1]; " \
                       "from=<a@client.test> to=<y@remote.test> proto=ESMTP " \
                       f"helo=<client.postbus.test>: smtp:[127.0.0.1]:{controller.port}" in log
            finally:
                system.stop()
    finally:
        controller.stop()
