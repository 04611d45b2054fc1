"""Issue #7 end to end: local parts that look like paths, through the real SMTP parser.

Without a local recipient table smtpd accepts them, and local(8) bounces
each as an unknown user, as Postfix does, creating nothing anywhere; with
the harness's table smtpd already rejects them at RCPT.
"""

from __future__ import annotations

import os
import re
import smtplib
import uuid
from pathlib import Path

import pytest

from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

UNIQUE = f"postbus-issue7-{uuid.uuid4().hex[:12]}"
#: RCPT TO path -> the name local(8) reports (quotes and backslashes removed by smtpd)
FORMS = {
    f"</tmp/{UNIQUE}/x@postbus.test>": f"/tmp/{UNIQUE}/x",
    f"<../../../../tmp/{UNIQUE}@postbus.test>": f"../../../../tmp/{UNIQUE}",
    f'<"../{UNIQUE}"@postbus.test>': f"../{UNIQUE}",
    f"<\\.\\./{UNIQUE}@postbus.test>": f"../{UNIQUE}",
    "<..@postbus.test>": "..",
    "<.Hidden@postbus.test>": ".hidden",
}


def _rcpt(client: smtplib.SMTP, path: str) -> tuple[int, bytes]:
    client.putcmd(f"RCPT TO:{path}")
    return client.getreply()


def test_path_local_parts_bounce_as_unknown_users(tmp_path: Path) -> None:
    system = MailSystem(tmp_path, {"local_recipient_maps": ""}).start()
    try:
        with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as client:
            client.ehlo("client.postbus.test")
            assert client.mail("<>")[0] == 250
            for path in FORMS:
                assert _rcpt(client, path)[0] == 250, path
            code, text = client.data(b"Subject: where to?\r\n\r\nbody\r\n")
            assert code == 250, text
            qid = text.decode().rsplit(" ", 1)[-1]

        def bounced() -> list[str]:
            return [line for line in system.maillog.read_text().splitlines()
                    if f"{qid}: to=<" in line and "status=bounced" in line]

        # two forms are the same address once smtpd unquotes them: cleanup queues it once
        names = set(FORMS.values())
        lines = system.wait_for(lambda: len(bounced()) == len(names) and bounced(), timeout=20)
        assert lines, system.maillog.read_text()
        reasons = sorted(re.sub(r".*dsn=", "dsn=", line) for line in lines)
        assert reasons == sorted(
            f'dsn=5.1.1, status=bounced (unknown user: "{name}")' for name in names
        )
        assert not os.path.exists(f"/tmp/{UNIQUE}")
        for parent in (system.mail, system.mail.parent, tmp_path):
            assert not [p for p in os.listdir(parent) if UNIQUE in p or "hidden" in p.lower()]
        assert not system.mail.exists() or os.listdir(system.mail) == []
    finally:
        system.stop()


def test_local_recipient_table_rejects_them_at_rcpt(tmp_path: Path) -> None:
    system = MailSystem(tmp_path).start()
    try:
        with smtplib.SMTP("127.0.0.1", system.smtp_port, timeout=30) as client:
            client.ehlo("client.postbus.test")
            assert client.mail("<>")[0] == 250
            for path in FORMS:
                code, text = _rcpt(client, path)
                assert code == 550, (path, text)
                assert text.endswith(
                    b": Recipient address rejected: User unknown in local recipient table"
                ), text
            assert _rcpt(client, "<bob@postbus.test>") == (250, b"2.1.5 Ok")
    finally:
        system.stop()
