"""Log lines in Postfix's format: pflogsumm summarises a Postbus log."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.peers import Peer
from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

BODY = "Subject: log\r\n\r\nbody\r\n"


def test_log_lines_follow_postfix_format_and_pflogsumm_reads_them(tmp_path: Path) -> None:
    with Peer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            qids = [system.send("a@client.test", [f"x{i}@remote.test"], BODY) for i in range(3)]
            qids.append(system.send("a@client.test", ["bob@postbus.test"], BODY))
            assert system.wait_for(
                lambda: all(f"{q}: removed" in system.maillog.read_text() for q in qids),
                timeout=15,
            ), system.maillog.read_text()
        finally:
            system.stop()
    log = system.maillog.read_text()
    prefix = r"^\w{3} [ \d]\d \d\d:\d\d:\d\d mail\.postbus\.test postbus/"
    qid = qids[0]
    for pattern in (
        rf"{prefix}smtpd\[\d+\]: connect from \S+\[127\.0\.0\.1\]$",
        rf"{prefix}smtpd\[\d+\]: {qid}: client=\S+\[127\.0\.0\.1\]",
        rf"{prefix}cleanup\[\d+\]: {qid}: message-id=",
        rf"{prefix}qmgr\[\d+\]: {qid}: from=<a@client\.test>, size=\d+, nrcpt=1 \(queue active\)$",
        rf"{prefix}smtp\[\d+\]: {qid}: to=<x0@remote\.test>, "
        rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, "
        rf"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, status=sent \(250 .*\)$",
        rf"{prefix}local\[\d+\]: {qids[3]}: to=<bob@postbus\.test>, relay=local, .*status=sent",
        rf"{prefix}qmgr\[\d+\]: {qid}: removed$",
    ):
        assert re.search(pattern, log, re.M), f"{pattern}\n{log}"
    pflogsumm = shutil.which("pflogsumm")
    if pflogsumm is None:
        pytest.skip("pflogsumm (Debian package pflogsumm) is not installed")
    out = subprocess.run(
        [pflogsumm, "--syslog-name=postbus", str(system.maillog)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert re.search(r"^\s+4\s+received", out, re.M), out
    assert re.search(r"^\s+4\s+delivered", out, re.M), out
    assert re.search(r"^\s+0\s+bounced", out, re.M), out
