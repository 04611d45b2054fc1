"""Nothing accepted is lost: kill -9 roles, restart NATS, and NATS outages."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest

from tests.e2e.peers import Peer, PeerHandler
from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

BODY = "Subject: durable\r\n\r\nmust not be lost\r\n"


def test_kill_qmgr_right_after_acceptance_delivers_exactly_once(tmp_path: Path) -> None:
    with Peer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            qids = [system.send("a@client.test", [f"r{i}@remote.test"], BODY) for i in range(3)]
            system.kill("qmgr")
            system.restart("qmgr")
            got = system.wait_for(lambda: len(peer.handler.messages) >= 3, timeout=20)
            assert got, system.maillog.read_text()
            # A result the killed qmgr had taken comes back to the new one (ack wait).
            removed = system.wait_for(
                lambda: all(f"{q}: removed" in system.maillog.read_text() for q in qids),
                timeout=20)
            assert removed, system.maillog.read_text()
            assert system.wait_for(system.quiet, timeout=20)  # nothing left that could deliver
            rcpts = sorted(m.recipients[0] for m in peer.handler.messages)
            assert rcpts == ["r0@remote.test", "r1@remote.test", "r2@remote.test"]
        finally:
            system.stop()


def test_kill_delivery_while_peer_stalls_in_data_still_delivers(tmp_path: Path) -> None:
    handler = PeerHandler(stall=8.0)
    with Peer(handler) as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            system.send("a@client.test", ["stall@remote.test"], BODY)
            assert system.wait_for(lambda: handler.attempts >= 1, timeout=10)
            system.kill("smtp")
            system.restart("smtp")
            got = system.wait_for(lambda: handler.attempts >= 2 and handler.messages, timeout=30)
            assert got, system.maillog.read_text()
            assert any(m.recipients == ["stall@remote.test"] for m in handler.messages)
        finally:
            system.stop()


def test_queued_mail_survives_nats_restart(tmp_path: Path) -> None:
    with Peer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"})
        roles = [label for label in system.children if label != "smtp"]
        system.start(only=roles)  # no delivery agent yet: mail stays queued
        try:
            system.send("a@client.test", ["kept@remote.test"], BODY)
            time.sleep(0.5)
            system.nats.stop()
            system.nats.start()
            system.start_role("smtp")
            system.wait_ready("smtp")
            got = system.wait_for(lambda: peer.handler.messages, timeout=30)
            assert got, system.maillog.read_text()
            assert got[0].recipients == ["kept@remote.test"]
            # the other roles reconnected: new mail flows too
            system.wait_for(lambda: _try_send(system, "after@remote.test"), timeout=15)
            assert system.wait_for(lambda: len(peer.handler.messages) >= 2, timeout=15)
        finally:
            system.stop()


def _try_send(system: MailSystem, rcpt: str) -> bool:
    try:
        system.send("a@client.test", [rcpt], BODY)
    except (AssertionError, OSError, smtplib.SMTPException):
        return False
    return True


def test_nats_down_means_451_never_250(tmp_path: Path) -> None:
    system = MailSystem(tmp_path).start()
    try:
        system.nats.stop()
        with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=60) as client:
            client.ehlo("client.postbus.test")
            code, _ = client.mail("a@client.test")
            if code == 250:
                code, _ = client.rcpt("bob@postbus.test")
            if code == 250:
                code, text = client.data(BODY)
                assert code == 451, (code, text)
                assert text.startswith(b"4.3.0"), text
            else:
                assert code in (421, 451), code
        assert not list(system.maildir("bob").glob("*")) if system.maildir("bob").exists() else True
    finally:
        system.stop()
