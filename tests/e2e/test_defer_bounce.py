"""Failures defer or bounce; they never lose mail."""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from tests.e2e.peers import Peer, PeerHandler
from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

BODY = "Subject: try\r\nMessage-ID: <try@postbus.test>\r\n\r\nbody\r\n"


def test_remote_4xx_defers_and_retries(tmp_path: Path) -> None:
    handler = PeerHandler(replies=["451 4.3.0 try again later"])
    with Peer(handler) as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            qid = system.send("alice@postbus.test", ["dave@remote.test"], BODY)
            got = system.wait_for(lambda: handler.messages, timeout=20)
            assert got, system.maillog.read_text()
            log = system.maillog.read_text()
            assert f"{qid}: to=<dave@remote.test>" in log
            assert "status=deferred" in log and "451 4.3.0 try again later" in log
            assert handler.attempts == 2
        finally:
            system.stop()


def test_remote_5xx_bounces_to_sender_with_rfc3464_report(tmp_path: Path) -> None:
    handler = PeerHandler(replies=["550 5.7.1 we do not want it"])
    with Peer(handler) as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            qid = system.send("alice@postbus.test", ["erin@remote.test"], BODY)
            files = system.wait_for(lambda: list(system.maildir("alice").glob("*")), timeout=20)
            assert files, system.maillog.read_text()
            report = email.message_from_bytes(files[0].read_bytes())
            assert report["Subject"] == "Undelivered Mail Returned to Sender"
            assert report.get_content_type() == "multipart/report"
            assert report["Return-Path"] == "<>"
            parts = list(report.walk())
            status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
            text = status.as_string()
            assert "Final-Recipient: rfc822; erin@remote.test" in text
            assert "Status: 5.7.1" in text
            assert "Action: failed" in text
            assert f"X-Postbus-Queue-ID: {qid}" in text  # X-$mail_name-Queue-ID
            assert "Original-Recipient: rfc822;erin@remote.test" in text
            log = system.maillog.read_text()
            assert "status=bounced" in log and f"{qid}: sender non-delivery notification:" in log
            assert system.wait_for(lambda: f"{qid}: removed" in system.maillog.read_text())
            assert handler.attempts == 1
        finally:
            system.stop()
