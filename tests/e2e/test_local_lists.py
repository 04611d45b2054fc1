"""local(8) lists and loops end to end: an owner- alias makes the list's copies leave with
the owner as envelope sender (a real SMTP peer sees it), and aliases that forward to each
other's addresses end in Postfix's "mail forwarding loop" bounce."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.peers import Peer
from tests.harness import MailSystem

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
