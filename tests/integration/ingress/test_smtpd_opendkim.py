"""smtpd_milters with a real OpenDKIM: the message is queued signed, and dkimpy verifies
the signature with the key opendkim-genkey made (no DNS: dkimpy's dnsfunc)."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest

from tests.integration.ingress.conftest import StartSmtpd
from tests.integration.ingress.test_smtpd_milter import queued, transaction
from tests.opendkim_instance import available, opendkim

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not available(), reason="opendkim/opendkim-tools not installed")]

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: bob@postbus.test\r\n"
           b"Subject: signed\r\nMessage-ID: <m1@example.org>\r\n"
           b"Date: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\nHello,\r\n\r\nsigned body.\r\n")


async def test_opendkim_signs(smtpd: StartSmtpd, tmp_path: Path) -> None:
    with opendkim(tmp_path) as odk:
        run = await smtpd(smtpd_milters=odk.name)
        _, content = await queued(run, await transaction(run, ["bob@postbus.test"],
                                                             MESSAGE))
        assert content.startswith(b"DKIM-Signature:"), content[:200]
        assert b"d=example.org" in content and b"s=test" in content
        assert dkim.verify(content, dnsfunc=odk.dnsfunc)
        # tampering shows: the check is real
        assert not dkim.verify(content.replace(b"signed body", b"changed body"),
                               dnsfunc=odk.dnsfunc)
        # a message of a domain OpenDKIM does not sign passes unchanged
        other = MESSAGE.replace(b"alice@example.org", b"alice@other.example")
        _, content2 = await queued(run, await transaction(run, ["bob@postbus.test"], other))
        assert b"DKIM-Signature" not in content2
