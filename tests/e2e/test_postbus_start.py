"""`postbus start` runs the whole system from the sample configuration (what `make run` does)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from postbus.servers import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def postbus(conf: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
        capture_output=True, text=True, timeout=120,
        input=stdin.decode() if stdin else None,
    )


def spool_parent(tmp_path: Path) -> Path:
    """Where the spool goes: as root the local agent writes as mail_owner, who cannot
    traverse pytest's 0700 tmp_path, so then a 0755 directory of its own."""
    if os.geteuid() != 0:
        return tmp_path / "var"
    path = Path(tempfile.mkdtemp(prefix="postbus-start-"))
    path.chmod(0o755)
    return path


def sample_config(tmp_path: Path, spool: Path) -> tuple[Path, int]:
    """The repo's sample config with its own ports and paths, as make run writes it."""
    conf = tmp_path / "etc"
    conf.mkdir()
    shutil.copy(REPO / "etc/postbus/local_users", conf / "local_users")
    smtp, policy, maps_api = free_port(), free_port(), free_port()
    master = (REPO / "etc/postbus/master.cf").read_text()
    master = master.replace("127.0.0.1:2525 ", f"127.0.0.1:{smtp} ")
    master = master.replace("127.0.0.1:10031 ", f"127.0.0.1:{policy} ")
    master = master.replace("127.0.0.1:10080 ", f"127.0.0.1:{maps_api} ")
    (conf / "master.cf").write_text(master)
    main = (REPO / "etc/postbus/main.cf").read_text() + (
        f"\ndata_directory = {tmp_path}/var\n"
        f"mail_spool_directory = {spool}/mail/\n"
        f"postbus_nats_url = nats://127.0.0.1:{free_port()}\n"
        f"postbus_redis_url = redis://127.0.0.1:{free_port()}/0\n"
        f"postbus_metrics_port = {free_port()}\n"
    )
    try:
        pwd.getpwnam("postfix")
    except KeyError:  # the sample's mail_owner is Postfix's account; without it, Debian's daemon
        main += "mail_owner = daemon\n"
    (conf / "main.cf").write_text(main)
    return conf, smtp


def test_start_runs_every_master_cf_role_and_delivers(tmp_path: Path) -> None:
    spool = spool_parent(tmp_path)
    conf, smtp_port = sample_config(tmp_path, spool)
    started = postbus(conf, "start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        out = started.stdout
        assert f"SMTP: 127.0.0.1:{smtp_port}" in out
        assert f"Maildir under {spool}/mail/<user>/new/" in out
        ports = [int(p) for p in re.findall(r"metrics http://127\.0\.0\.1:(\d+)/metrics", out)]
        assert len(ports) == 9, out  # smtpd qmgr smtp relay local virtual policy filter maps-api
        for port in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert b"postbus_build_info" in r.read()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.ehlo("client.example")
            client.mail("alice@example.com")
            # not in local_users: refused at RCPT, never a path (issue #7)
            assert client.rcpt("/tmp/x@postbus.test") == (
                550, b"5.1.1 </tmp/x@postbus.test>: Recipient address rejected: "
                     b"User unknown in local recipient table")
            client.rset()
            client.sendmail("alice@example.com", ["bob@postbus.test"],
                            "Subject: hi\r\n\r\nhello\r\n")
        maildir = spool / "mail/bob/new"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (maildir.exists() and any(maildir.iterdir())):
            time.sleep(0.05)
        assert maildir.exists() and len(list(maildir.iterdir())) == 1
        sent = postbus(conf, "sendmail", "-f", "alice@example.com", "carol@postbus.test",
                       stdin=b"Subject: via sendmail\n\nbody\n")
        assert sent.returncode == 0, sent.stderr
        carol = spool / "mail/carol/new"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (carol.exists() and any(carol.iterdir())):
            time.sleep(0.05)
        assert carol.exists() and b"Subject: via sendmail" in next(carol.iterdir()).read_bytes()
        status = postbus(conf, "status")
        assert status.returncode == 0 and "is running" in status.stdout
    finally:
        stopped = postbus(conf, "stop")
        if spool != tmp_path / "var":
            shutil.rmtree(spool)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert postbus(conf, "status").returncode == 1
