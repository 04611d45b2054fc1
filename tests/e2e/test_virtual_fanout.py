"""Virtual aliases fan out to virtual mailboxes, end to end (issue 14 found them delivering
nothing): smtpd's cleanup expands them, the qmgr routes each result to virtual(8)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

VIRTUAL_ID = 5000
BODY = "Subject: team\r\nMessage-ID: <team@postbus.test>\r\n\r\nbody\r\n"


def test_aliases_in_virtual_domains_reach_every_target(tmp_path: Path) -> None:
    settings = {
        "virtual_alias_domains": "alias.test",
        "virtual_alias_maps": "inline:{ {team@alias.test = a@virt.test, b@virt.test}, "
                              "{@alias.test = c@virt.test}, "
                              "{staff@virt.test = a@virt.test, box@virt.test} }",
        "virtual_mailbox_domains": "virt.test",
        "virtual_mailbox_base": "BASE",
        "virtual_mailbox_maps": "inline:{ a@virt.test=a/, b@virt.test=b/, c@virt.test=c/, "
                                "box@virt.test=box }",
        "virtual_uid_maps": f"static:{VIRTUAL_ID}", "virtual_gid_maps": f"static:{VIRTUAL_ID}",
    }
    system = MailSystem(tmp_path, settings)
    base = system.mail.parent / "vmail"  # beside the local spool, reachable by VIRTUAL_ID
    base.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, VIRTUAL_ID, VIRTUAL_ID)
    main_cf = system.conf / "main.cf"
    main_cf.write_text(main_cf.read_text().replace("= BASE", f"= {base}"))
    system.start()
    try:
        system.send("alice@postbus.test", ["team@alias.test", "someone@alias.test"], BODY)
        system.send("alice@postbus.test", ["staff@virt.test"], BODY)

        def count(name: str) -> int:
            new = base / name / "new"
            return len(list(new.iterdir())) if new.is_dir() else 0

        def delivered() -> bool:
            mbox = base / "box"
            return ([count(n) for n in ("a", "b", "c")] == [2, 1, 1] and mbox.exists()
                    and mbox.read_bytes().count(b"\nSubject: team\n") == 1)

        assert system.wait_for(delivered, timeout=30), system.maillog.read_text()
        log = system.maillog.read_text()
        assert "to=<a@virt.test>, orig_to=<team@alias.test>, relay=virtual" in log
        assert "to=<c@virt.test>, orig_to=<someone@alias.test>, relay=virtual" in log
        assert "to=<box@virt.test>, orig_to=<staff@virt.test>, relay=virtual" in log
    finally:
        system.stop()
