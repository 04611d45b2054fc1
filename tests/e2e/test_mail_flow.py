"""Mail flows end to end through real processes: SMTP in, Maildir or remote SMTP out."""

from __future__ import annotations

import email
from pathlib import Path

import pytest

from tests.e2e.peers import Peer
from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

MESSAGE = (
    "From: Alice <alice@client.test>\r\n"
    "To: Bob <bob@postbus.test>\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@client.test>\r\n"
    "\r\n"
    "Hello Bob.\r\n"
    ".leading dot stays\r\n"
)


def test_local_mail_lands_in_maildir_within_two_seconds(tmp_path: Path) -> None:
    system = MailSystem(tmp_path).start()
    try:
        qid = system.send("alice@client.test", ["bob@postbus.test"], MESSAGE)
        files = system.wait_for(lambda: list(system.maildir("bob").glob("*")), timeout=2.0)
        assert len(files) == 1, system.maillog.read_text()
        msg = email.message_from_bytes(files[0].read_bytes())
        assert msg["Subject"] == "hello"
        assert msg["Delivered-To"] == "bob@postbus.test"
        assert msg["Return-Path"] == "<alice@client.test>"
        assert qid in msg["Received"]
        assert b".leading dot stays" in files[0].read_bytes()
    finally:
        system.stop()


def test_relayhost_mail_arrives_at_remote_peer_intact(tmp_path: Path) -> None:
    with Peer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            body = MESSAGE.replace("bob@postbus.test", "carol@remote.test")
            qid = system.send("alice@client.test", ["carol@remote.test"], body)
            got = system.wait_for(lambda: peer.handler.messages, timeout=5.0)
            assert got, system.maillog.read_text()
            received = got[0]
            assert received.sender == "alice@client.test"
            assert received.recipients == ["carol@remote.test"]
            content = received.content.replace(b"\r\n", b"\n")
            headers, _, body_part = content.partition(b"\n\n")
            assert headers.startswith(b"Received: from client.postbus.test")
            assert qid.encode() in headers
            assert b"Subject: hello" in headers
            assert body_part == b"Hello Bob.\n.leading dot stays\n"
            log = system.wait_for(lambda: f"{qid}: removed" in system.maillog.read_text())
            assert log, system.maillog.read_text()
        finally:
            system.stop()


def test_nine_megabyte_message_end_to_end(tmp_path: Path) -> None:
    with Peer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            line = ("x" * 76 + "\r\n")
            body = "Subject: big\r\n\r\n" + line * (9 * 1024 * 1024 // len(line))
            system.send("alice@client.test", ["carol@remote.test"], body)
            got = system.wait_for(lambda: peer.handler.messages, timeout=30.0)
            assert got, system.maillog.read_text()
            assert got[0].content.count(b"x" * 76) == 9 * 1024 * 1024 // len(line)
        finally:
            system.stop()


@pytest.mark.parametrize("record", ["", "received, active, delivered, removed"])
def test_every_state_change_is_an_event_on_the_bus(tmp_path: Path, record: str) -> None:
    """By default the events a program needs (received, delivered ...); active and
    removed too when postbus_events_record names them."""
    import asyncio
    import json

    from postbus.bus.jetstream import connect

    system = MailSystem(tmp_path, {"postbus_events_record": record} if record else {}).start()

    async def watch() -> tuple[str, list[str]]:
        nc = await connect(system.nats.url, "observer")
        kinds: list[tuple[str, str]] = []

        async def seen(msg) -> None:  # type: ignore[no-untyped-def]
            kinds.append((msg.subject.rsplit(".", 1)[-1], json.loads(msg.data)["queue_id"]))

        await nc.subscribe("postbus.event.*", cb=seen)
        qid = await asyncio.to_thread(system.send, "a@client.test", ["bob@postbus.test"], MESSAGE)
        for _ in range(300):
            if ("removed" if record else "delivered", qid) in kinds and ("delivered", qid) in kinds:
                break
            await asyncio.sleep(0.05)
        if not record:
            # the qmgr removed it; what the qmgr records next (the next message's received)
            # comes after the removed it would have recorded, on the same connection
            await asyncio.to_thread(system.wait_for,
                                    lambda: f"{qid}: removed" in system.maillog.read_text(), 15)
            after = await asyncio.to_thread(system.send, "a@client.test", ["bob@postbus.test"],
                                            MESSAGE)
            for _ in range(300):
                if ("received", after) in kinds:
                    break
                await asyncio.sleep(0.05)
            assert ("received", after) in kinds
        await nc.close()
        return qid, [kind for kind, q in kinds if q == qid]

    try:
        qid, kinds = asyncio.run(watch())
        if not record:
            assert kinds == ["received", "delivered"], (qid, kinds)
            return
        # received (from smtpd) and active (from the qmgr) come from two publishers, so
        # either may arrive first; so do delivered (from the local agent) and removed
        # (from the qmgr), after both.
        assert sorted(kinds[:2]) == ["active", "received"], (qid, kinds)
        assert sorted(kinds[2:]) == ["delivered", "removed"], (qid, kinds)
    finally:
        system.stop()


def test_routing_operators_resolve_to_the_remote_address(tmp_path: Path) -> None:
    """An authorized client's ``user%remote@local`` and ``remote!user@local`` leave as
    ``user@remote`` (trivial-rewrite), with the original recipient in the log, and no
    local mailbox is made from the raw local part."""
    with Peer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            qid = system.send("alice@client.test",
                              ["carol%remote.test@postbus.test", "remote.test!dave@postbus.test"],
                              MESSAGE)
            got = system.wait_for(lambda: peer.handler.messages, timeout=5.0)
            assert got, system.maillog.read_text()
            assert sorted(got[0].recipients) == ["carol@remote.test", "dave@remote.test"]
            log = system.wait_for(lambda: f"{qid}: removed" in system.maillog.read_text())
            assert log, system.maillog.read_text()
            text = system.maillog.read_text()
            assert f"{qid}: to=<carol@remote.test>, orig_to=<carol%remote.test@postbus.test>" \
                in text
            assert not list(system.mail.glob("*remote.test*"))
        finally:
            system.stop()
