"""Configuration changes reach running services without losing mail in flight;
a bad configuration stops a service from starting and names file, line, parameter."""

from __future__ import annotations

import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.peers import Peer
from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

BODY = "Subject: reload\r\n\r\nbody\r\n"


def test_main_cf_change_during_traffic_loses_nothing(tmp_path: Path) -> None:
    with Peer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            sent: list[str] = []
            errors: list[Exception] = []

            def traffic() -> None:
                for i in range(40):
                    try:
                        sent.append(system.send("a@client.test", [f"r{i}@remote.test"], BODY))
                    except (AssertionError, OSError, smtplib.SMTPException) as exc:
                        errors.append(exc)
                    time.sleep(0.05)

            sender = threading.Thread(target=traffic)
            sender.start()
            time.sleep(0.5)
            main_cf = system.conf / "main.cf"
            main_cf.write_text(main_cf.read_text() + "smtpd_banner = $myhostname ESMTP reloaded\n")
            sender.join(60)
            assert not errors, errors
            assert system.wait_for(lambda: len(peer.handler.messages) >= 40, timeout=30)
            # removal follows delivery by up to a batch window (the done marks' group)
            assert system.wait_for(lambda: all(
                f"{qid}: removed" in system.maillog.read_text() for qid in sent), timeout=15)
            assert "reload -- configuration" in system.maillog.read_text()
            with smtplib.SMTP(timeout=10) as client:  # new sessions see the new banner
                code, banner = client.connect("127.0.0.1", system.smtp_port)
            assert code == 220 and banner.endswith(b"ESMTP reloaded"), banner
        finally:
            system.stop()


def test_bad_value_stops_a_service_naming_file_line_and_parameter(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text("myhostname = mx.postbus.test\nmessage_size_limit = lots\n")
    (conf / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    run = subprocess.run(
        [sys.executable, "-m", "qmgr", "-c", str(conf), "-n", "qmgr"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1
    assert f"{conf}/main.cf, line 2: parameter message_size_limit" in run.stderr
    assert "fatal" in run.stderr
