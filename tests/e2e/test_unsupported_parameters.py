"""A main.cf brought over from Postfix with features Postbus lacks does not start
half-working: each real process refuses, naming the line; with
``postbus_unsupported_parameters = warn`` it starts and says once what it ignores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from postbus.servers import ServerProcess, free_port

pytestmark = pytest.mark.e2e

FEATURES = (
    "always_bcc = archive@example.com\n"
    "milter_header_checks = pcre:/etc/postbus/milter_header_checks\n"
)


def write_conf(tmp_path: Path, main_cf: str, master_cf: str) -> Path:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("myhostname = mx.postbus.test\n" + main_cf)
    (conf / "master.cf").write_text(master_cf)
    return conf


def qmgr(conf: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "qmgr", "-c", str(conf), "-n", "qmgr", *args]


def test_role_refuses_fast_naming_the_line(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, FEATURES, "qmgr unix n - n 300 1 qmgr\n")
    started = time.monotonic()
    run = subprocess.run(qmgr(conf), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert time.monotonic() - started < 15
    assert (f"fatal: {conf}/main.cf, line 2: parameter always_bcc is not supported yet "
            "by Postbus") in run.stderr


def test_role_refuses_its_master_cf_override(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "",
                      "qmgr unix n - n 300 1 qmgr\n  -o always_bcc=archive@example.com\n")
    run = subprocess.run(qmgr(conf), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert (f"fatal: {conf}/master.cf, line 1: parameter always_bcc is not supported yet "
            "by Postbus") in run.stderr


def test_postbus_start_refuses_before_starting_anything(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, f"data_directory = {tmp_path}/var\n" + FEATURES,
                      "qmgr unix n - n 300 1 qmgr\n")
    run = subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), "start"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr == (f"postbus: fatal: {conf}/main.cf, line 3: parameter always_bcc "
                          "is not supported yet by Postbus\n")
    assert not (tmp_path / "var").exists()  # nothing was started


def test_warn_switch_starts_and_warns_once_per_parameter(
    tmp_path: Path, nats: ServerProcess
) -> None:
    maillog = tmp_path / "maillog"
    conf = write_conf(
        tmp_path,
        FEATURES + f"postbus_unsupported_parameters = warn\nmaillog_file = {maillog}\n"
        f"postbus_nats_url = {nats.url}\n",
        "qmgr unix n - n 300 1 qmgr\n",
    )
    port = free_port()
    with open(tmp_path / "qmgr.err", "wb") as err:
        proc = subprocess.Popen(qmgr(conf, "--metrics", f"127.0.0.1:{port}"),
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not _ready(port):
            assert proc.poll() is None, (tmp_path / "qmgr.err").read_text()
            assert time.monotonic() < deadline, "qmgr did not become ready"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGHUP)  # a reload does not warn again
        _wait_for(lambda: "reload -- configuration" in maillog.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    warnings = [line for line in maillog.read_text().splitlines() if "not supported" in line]
    assert [w.split(": ", 1)[1] for w in warnings] == [
        f"warning: {conf}/main.cf, line 2: parameter always_bcc is not supported yet by "
        "Postbus; ignored (postbus_unsupported_parameters = warn)",
        f"warning: {conf}/main.cf, line 3: parameter milter_header_checks is not supported yet by "
        "Postbus; ignored (postbus_unsupported_parameters = warn)",
    ]
    assert all(" postbus/qmgr[" in w for w in warnings)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _wait_for(predicate: object, timeout: float = 30) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_sendmail_refuses_but_queue_tools_still_work(tmp_path: Path) -> None:
    """sendmail injects mail (always_bcc would apply): it refuses;
    postconf shows and edits such a main.cf as Postfix's does."""
    conf = write_conf(tmp_path, FEATURES, "qmgr unix n - n 300 1 qmgr\n")

    def postbus(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
                              capture_output=True, text=True, timeout=60, input=stdin)

    sent = postbus("sendmail", "bob@example.com", stdin="Subject: x\n\nbody\n")
    assert sent.returncode == 1
    assert sent.stderr == (f"postbus: fatal: {conf}/main.cf, line 2: parameter always_bcc "
                           "is not supported yet by Postbus\n")
    shown = postbus("postconf", "-n", "always_bcc", "milter_header_checks")
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout == ("always_bcc = archive@example.com\n"
                            "milter_header_checks = pcre:/etc/postbus/milter_header_checks\n")
