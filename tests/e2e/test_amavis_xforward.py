"""amavisd's README.postfix setup, verbatim: the ``smtp-amavis`` transport with
``-o smtp_send_xforward_command=yes`` (and the rest of its -o lines), the
``127.0.0.1:10025`` re-injection listener with every -o line the README gives
(on a free port here). The system starts (nothing refused), the "amavis" (an
aiosmtpd that offers XFORWARD, as amavisd does) gets the original client in
XFORWARD and passes it on when it re-injects, as amavisd does; the re-injection
smtpd logs it as ``orig_client=`` and ``orig_queue_id=``; the sink gets one copy."""

from __future__ import annotations

import asyncio
import re
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

AMAVIS_MASTER_CF = """\
smtp-amavis unix - - n - 2 smtp
  -o smtp_data_done_timeout=1200
  -o smtp_send_xforward_command=yes
  -o disable_dns_lookups=yes
  -o max_use=20
127.0.0.1:{reinject} inet n - n - - smtpd
  -o content_filter=
  -o local_recipient_maps=
  -o relay_recipient_maps=
  -o smtpd_restriction_classes=
  -o smtpd_delay_reject=no
  -o smtpd_client_restrictions=permit_mynetworks,reject
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_data_restrictions=reject_unauth_pipelining
  -o smtpd_end_of_data_restrictions=
  -o mynetworks=127.0.0.0/8
  -o smtpd_error_sleep_time=0
  -o smtpd_soft_error_limit=1001
  -o smtpd_hard_error_limit=1000
  -o smtpd_client_connection_count_limit=0
  -o smtpd_client_connection_rate_limit=0
  -o receive_override_options=no_header_body_checks,no_unknown_recipient_checks,no_milters
  -o local_header_rewrite_clients=
  -o smtpd_milters=
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
"""


class AmavisSMTP(SMTP):
    """Offers XFORWARD (amavisd's EHLO says ``XFORWARD NAME ADDR PORT PROTO HELO IDENT
    SOURCE``) and keeps the commands of the session for the re-injection."""

    async def smtp_XFORWARD(self, arg: str) -> None:
        self.session.xforward = [*getattr(self.session, "xforward", []), arg]
        await self.push("250 2.0.0 Ok")


@dataclass
class Amavis:
    port: int  # the re-injection listener
    xforward: list[list[str]] = field(default_factory=list)
    reinjected: list[tuple[int, bytes]] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        session.xforward = []
        return [*responses[:-1], "250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE",
                responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        lines = list(getattr(session, "xforward", []))
        session.xforward = []
        self.xforward.append(lines)
        self.mail_options.append(list(envelope.mail_options))
        content = b"X-Virus-Scanned: amavis at postbus.test\r\n" + (envelope.original_content
                                                                     or b"")
        try:
            await asyncio.to_thread(self._send, envelope.mail_from or "",
                                    list(envelope.rcpt_tos), content, lines)
        except smtplib.SMTPException as exc:
            return f"451 4.5.0 Error in processing: {exc}"
        return "250 2.0.0 Ok, id=amavis, from MTA: queued"

    def _send(self, sender: str, rcpts: list[str], content: bytes, lines: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.ehlo("localhost")
            assert client.has_extn("xforward"), client.esmtp_features
            for line in lines:
                self.reinjected.append(client.docmd("XFORWARD", line))
            client.sendmail(sender, rcpts, content, mail_options=[
                o for o in self.mail_options[-1] if o == "SMTPUTF8"])


def test_amavis_setup_starts_and_delivers_once_with_the_client_forwarded(
    tmp_path: Path,
) -> None:
    reinject = free_port()
    amavis = Amavis(reinject)

    class _Controller(Controller):
        def factory(self) -> SMTP:
            return AmavisSMTP(self.handler, **self.SMTP_kwargs)

    controller = _Controller(amavis, hostname="127.0.0.1", port=free_port(), decode_data=False,
                             enable_SMTPUTF8=True)
    controller.start()
    try:
        with Peer() as sink:
            main = {"relayhost": f"[127.0.0.1]:{sink.port}", "smtputf8_enable": "yes",
                    "content_filter": f"smtp-amavis:[127.0.0.1]:{controller.port}"}
            master = MASTER_CF + AMAVIS_MASTER_CF.replace("{reinject}", str(reinject))
            system = MailSystem(tmp_path / "sys", main, master)
            system.start()
            try:
                qid = system.send("a@client.test", ["x@remote.test"],
                                  "From: a@client.test\r\nSubject: scan\r\n\r\nbody\r\n")
                got = system.wait_for(lambda: sink.handler.messages, timeout=60)
                assert got, system.maillog.read_text()
                assert system.wait_for(system.quiet, timeout=30)
                log = system.maillog.read_text()
                assert len(sink.handler.messages) == 1, log
                assert sink.handler.messages[0].content.count(b"X-Virus-Scanned:") == 1
                # what our smtp client forwarded: the client of the first smtpd
                [lines] = amavis.xforward
                assert re.fullmatch(r"ADDR=127\.0\.0\.1 PORT=\d+", lines[0]), lines
                assert lines[1:] == [
                    f"PROTO=ESMTP HELO=client.postbus.test IDENT={qid} SOURCE=LOCAL"], lines
                assert [code for code, _ in amavis.reinjected] == [250, 250]
                assert re.search(
                    rf"\]: (\w+): client=unknown\[127\.0\.0\.1\], orig_queue_id={qid}, "
                    r"orig_client=unknown\[127\.0\.0\.1\]$", log, re.M), log
                assert (f"{qid}: to=<x@remote.test>, relay=127.0.0.1[127.0.0.1]:"
                        f"{controller.port}, ") in log, log
                # the sender's SMTPUTF8 request goes through the queue to the filter
                with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as client:
                    client.ehlo("client.postbus.test")
                    client.sendmail("a@client.test", ["y@remote.test"],
                                    b"Subject: plain\r\n\r\nbody\r\n", mail_options=["SMTPUTF8"])
                assert system.wait_for(lambda: len(sink.handler.messages) == 2, timeout=60)
                assert [o for o in amavis.mail_options[0] if o == "SMTPUTF8"] == []
                assert "SMTPUTF8" in amavis.mail_options[1], amavis.mail_options
            finally:
                system.stop()
    finally:
        controller.stop()
