"""local(8) end to end: an owner- alias makes the list's copies leave with the owner as
envelope sender (a real SMTP peer sees it), aliases that forward to each other's addresses
end in Postfix's "mail forwarding loop" bounce, and mailbox_transport hands local mail to
the lmtp transport (a real LMTP peer)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

from postbus.servers import free_port
from tests.e2e.peers import Peer, PeerHandler
from tests.harness import MASTER_CF, MailSystem

pytestmark = pytest.mark.e2e

BODY = "Subject: list\r\nMessage-ID: <list@client.test>\r\n\r\nhello list\r\n"


def test_owner_alias_and_forwarding_loop(tmp_path: Path) -> None:
    aliases = tmp_path / "aliases"
    aliases.write_text(
        "list friend@remote.test, bob\nowner-list listadmin@remote.test\n"
        "ping pong@postbus.test\npong ping@postbus.test\n")
    with Peer() as peer:
        system = MailSystem(tmp_path, {
            "relayhost": f"[127.0.0.1]:{peer.port}",
            "alias_maps": f"texthash:{aliases}",
            "local_recipient_maps": f"texthash:{tmp_path}/etc/local_users, $alias_maps",
        }).start()
        try:
            system.send("alice@client.test", ["list@postbus.test"], BODY)
            system.send("alice@client.test", ["ping@postbus.test"], BODY)

            def arrived() -> bool:
                return len(peer.handler.messages) >= 2 and (system.mail / "bob" / "new").is_dir()

            assert system.wait_for(arrived, timeout=60), system.maillog.read_text()
            by_rcpt = {m.recipients[0]: m for m in peer.handler.messages}
            listed = by_rcpt["friend@remote.test"]
            assert listed.sender == "owner-list@mail.postbus.test"
            assert b"\r\nDelivered-To: list@postbus.test\r\n" in b"\r\n" + listed.content
            [copy] = list((system.mail / "bob" / "new").iterdir())
            assert copy.read_bytes().startswith(b"Return-Path: <owner-list@mail.postbus.test>\n")
            bounce = by_rcpt["alice@client.test"]
            assert bounce.sender in ("", "<>")  # aiosmtpd keeps the brackets of a null sender
            assert b"mail forwarding loop for ping@postbus.test" in bounce.content
            log = system.maillog.read_text()
            assert ("dsn=5.4.6, status=bounced (mail forwarding loop for ping@postbus.test)"
                    in log), log
        finally:
            system.stop()


class _LmtpPeer(Peer):
    """The e2e peer speaking LMTP."""

    def __init__(self) -> None:  # not Peer's: its unused controller would leak a loop
        self.handler = PeerHandler()
        self.port = free_port()
        self.controller = _LmtpController(
            self.handler, hostname="127.0.0.1", port=self.port, decode_data=False)


class _LmtpController(Controller):
    def factory(self) -> LMTP:
        return LMTP(self.handler, decode_data=False)


def test_mailbox_transport_hands_local_mail_to_lmtp(tmp_path: Path) -> None:
    """local(8) passes the recipient to the lmtp transport within the attempt; the qmgr
    takes lmtp's report for it and the message is removed once, delivered."""
    with _LmtpPeer() as peer:
        system = MailSystem(
            tmp_path, {"mailbox_transport": f"lmtp:inet:127.0.0.1:{peer.port}"},
            master_cf=MASTER_CF + "lmtp      unix  -       -       n       -       -       lmtp\n")
        system.start()
        try:
            qid = system.send("alice@client.test", ["bob@postbus.test"], BODY)

            def removed() -> bool:
                return f"{qid}: removed" in system.maillog.read_text()

            assert system.wait_for(removed, timeout=60), system.maillog.read_text()
            [message] = peer.handler.messages
            assert (message.sender, message.recipients) == (
                "alice@client.test", ["bob@postbus.test"])
            log = system.maillog.read_text()
            assert f"{qid}: passing <bob@postbus.test> to transport=lmtp" in log
            assert re.search(rf"{qid}: to=<bob@postbus\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]"
                             rf":{peer.port}, .*status=sent \(250 ", log), log
            assert not (system.mail / "bob").exists()
        finally:
            system.stop()
