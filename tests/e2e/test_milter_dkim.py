"""smtpd_milters end to end: a real OpenDKIM signs as mail comes in, the whole system
relays it, and dkimpy verifies the signature at the receiving aiosmtpd peer."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest

from tests.e2e.peers import Peer
from tests.harness import MailSystem
from tests.opendkim_instance import available, opendkim

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not available(), reason="opendkim/opendkim-tools not installed")]

MESSAGE = (
    "From: Alice <alice@client.test>\r\n"
    "To: Carol <carol@remote.test>\r\n"
    "Subject: signed on the way in\r\n"
    "\r\n"
    "Hello Carol.\r\n"
    ".leading dot stays\r\n"
)


def test_opendkim_signature_verifies_at_the_peer(tmp_path: Path) -> None:
    with opendkim(tmp_path / "dkim", "client.test") as odk, Peer() as peer:
        system = MailSystem(tmp_path / "sys", {"relayhost": f"[127.0.0.1]:{peer.port}",
                                               "smtpd_milters": odk.name}).start()
        try:
            qid = system.send("alice@client.test", ["carol@remote.test"], MESSAGE)
            got = system.wait_for(lambda: peer.handler.messages, timeout=10.0)
            assert got, system.maillog.read_text()
            content = got[0].content
            assert content.startswith(b"DKIM-Signature:"), content[:300]
            assert qid.encode() in content
            assert dkim.verify(content, dnsfunc=odk.dnsfunc)
            assert not dkim.verify(content.replace(b"Hello Carol", b"Hello Eve"),
                                   dnsfunc=odk.dnsfunc)
        finally:
            system.stop()
