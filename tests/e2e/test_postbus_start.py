"""`postbus start` runs the whole system from the sample configuration (what `make run` does)."""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
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


def sample_config(tmp_path: Path) -> tuple[Path, int]:
    """The repo's sample config with its own ports and paths, as make run writes it."""
    conf = tmp_path / "etc"
    conf.mkdir()
    smtp, policy, maps_api = free_port(), free_port(), free_port()
    master = (REPO / "etc/postbus/master.cf").read_text()
    master = master.replace("127.0.0.1:2525 ", f"127.0.0.1:{smtp} ")
    master = master.replace("127.0.0.1:10031 ", f"127.0.0.1:{policy} ")
    master = master.replace("127.0.0.1:10080 ", f"127.0.0.1:{maps_api} ")
    (conf / "master.cf").write_text(master)
    main = (REPO / "etc/postbus/main.cf").read_text() + (
        f"\ndata_directory = {tmp_path}/var\n"
        f"mail_spool_directory = {tmp_path}/var/mail/\n"
        f"postbus_nats_url = nats://127.0.0.1:{free_port()}\n"
        f"postbus_redis_url = redis://127.0.0.1:{free_port()}/0\n"
        f"postbus_metrics_port = {free_port()}\n"
    )
    (conf / "main.cf").write_text(main)
    return conf, smtp


def test_start_runs_every_master_cf_role_and_delivers(tmp_path: Path) -> None:
    conf, smtp_port = sample_config(tmp_path)
    started = postbus(conf, "start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        out = started.stdout
        assert f"SMTP: 127.0.0.1:{smtp_port}" in out
        assert f"Maildir under {tmp_path}/var/mail/<user>/new/" in out
        ports = [int(p) for p in re.findall(r"metrics http://127\.0\.0\.1:(\d+)/metrics", out)]
        assert len(ports) == 9, out  # smtpd qmgr smtp relay local virtual policy filter maps-api
        for port in ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert b"postbus_build_info" in r.read()
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail("alice@example.com", ["bob@postbus.test"],
                            "Subject: hi\r\n\r\nhello\r\n")
        maildir = tmp_path / "var/mail/bob/new"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (maildir.exists() and any(maildir.iterdir())):
            time.sleep(0.05)
        assert maildir.exists() and len(list(maildir.iterdir())) == 1
        sent = postbus(conf, "sendmail", "-f", "alice@example.com", "carol@postbus.test",
                       stdin=b"Subject: via sendmail\n\nbody\n")
        assert sent.returncode == 0, sent.stderr
        carol = tmp_path / "var/mail/carol/new"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (carol.exists() and any(carol.iterdir())):
            time.sleep(0.05)
        assert carol.exists() and b"Subject: via sendmail" in next(carol.iterdir()).read_bytes()
        status = postbus(conf, "status")
        assert status.returncode == 0 and "is running" in status.stdout
    finally:
        stopped = postbus(conf, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert postbus(conf, "status").returncode == 1
