"""`postbus start` runs the whole system from the sample configuration (what `make run` does).

Started as root (as CI runs), the roles run as mail_owner (``postbus`` in the
sample main.cf; `make test` creates the user), so every test here uses
``shared_tmp_path``, which that user can enter.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postbus.config.loader import Config
from postbus.master_plan import plan
from postbus.servers import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0


def postbus(conf: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
        capture_output=True, text=True, timeout=120,
        input=stdin.decode() if stdin else None,
    )


def sample_config(tmp_path: Path, extra: str = "", master_cf: str = "") -> tuple[Path, int]:
    """The repo's sample config with its own ports and paths, as make run writes it."""
    conf = tmp_path / "etc"
    conf.mkdir()
    shutil.copy(REPO / "etc/postbus/local_users", conf / "local_users")
    smtp, policy, maps_api = free_port(), free_port(), free_port()
    master = master_cf or (REPO / "etc/postbus/master.cf").read_text()
    master = master.replace("127.0.0.1:2525 ", f"127.0.0.1:{smtp} ")
    master = master.replace("127.0.0.1:10031 ", f"127.0.0.1:{policy} ")
    master = master.replace("127.0.0.1:10080 ", f"127.0.0.1:{maps_api} ")
    (conf / "master.cf").write_text(master)
    main = (REPO / "etc/postbus/main.cf").read_text() + (
        f"\ndata_directory = {tmp_path}/var\n"
        f"mail_spool_directory = {tmp_path}/var/mail/\n"
        f"postbus_nats_url = nats://127.0.0.1:{free_port()}\n"
        f"postbus_nats_monitor_port = {free_port()}\n"  # not one master picks: it may be ours
        f"postbus_redis_url = redis://127.0.0.1:{free_port()}/0\n"
        # maps-api's other listeners default to fixed ports: two starts at once (xdist) clashed
        f"postbus_maps_api_url = http://127.0.0.1:{maps_api}\n"
        f"postbus_maps_api_socketmap_listen = 127.0.0.1:{free_port()}\n"
        f"postbus_maps_api_tcp_listen = 127.0.0.1:{free_port()}\n"
    )
    (conf / "main.cf").write_text(main)
    roles = len(plan(Config.load(conf))[0])  # a metrics port each, none another server's
    (conf / "main.cf").write_text(
        main + f"postbus_metrics_port = {free_port(span=max(roles, 1))}\n" + extra)
    return conf, smtp


def state(tmp_path: Path) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads((tmp_path / "var/master/master.state").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return result


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def started(shared_tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A running system from the sample config; stopped at the end."""
    conf, _ = sample_config(shared_tmp_path, "service_throttle_time = 2s\n")
    result = postbus(conf, "start")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield conf, shared_tmp_path
    finally:
        postbus(conf, "stop")


def test_start_runs_every_master_cf_role_and_delivers(shared_tmp_path: Path) -> None:
    tmp_path = shared_tmp_path
    conf, smtp_port = sample_config(tmp_path)
    started = postbus(conf, "start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        out = started.stdout
        assert f"SMTP: 127.0.0.1:{smtp_port}" in out
        assert f"Maildir under {tmp_path}/var/mail/<user>/new/" in out
        ports = [int(p) for p in re.findall(r"metrics http://127\.0\.0\.1:(\d+)/metrics", out)]
        assert len(ports) == 9, out  # smtpd qmgr smtp relay local virtual policy filter maps-api
        assert len(re.findall(r"^  \S+ +running +pid \d+ ", out, re.M)) == 9, out
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


def test_roles_run_as_mail_owner_when_started_as_root(started: tuple[Path, Path]) -> None:
    """As root: every role but local and virtual (unpriv n), nats-server and
    redis-server run as mail_owner, who owns data_directory and the maillog.
    Not as root: everything runs as the invoking user."""
    _, tmp_path = started
    owner = pwd.getpwnam("postbus") if ROOT else pwd.getpwuid(os.getuid())
    current = state(tmp_path)
    children = {c["label"]: c for c in current["children"]}
    assert len(children) == 9
    for label, child in children.items():
        expected = 0 if ROOT and label in ("local", "virtual") else owner.pw_uid
        assert uid_of(child["pid"]) == expected, label
        assert child["user"] == ("" if not ROOT else "root" if expected == 0 else "postbus")
    for name, pid in current["server_pids"].items():
        assert uid_of(pid) == owner.pw_uid, name
    owned = ("var", "var/maillog", "var/nats", "var/redis") + (("var/mail",) if ROOT else ())
    for path in owned:
        assert (tmp_path / path).stat().st_uid == owner.pw_uid, path
    private = (tmp_path / "var/master").stat()  # the master's files stay its own
    assert private.st_uid == os.geteuid() and private.st_mode & 0o022 == 0


def test_start_follows_no_link_planted_in_data_directory(shared_tmp_path: Path) -> None:
    """mail_owner owns data_directory: a link it plants must not lead the
    master's writes (as root) elsewhere."""
    conf, _ = sample_config(shared_tmp_path)
    elsewhere = shared_tmp_path / "elsewhere"
    elsewhere.mkdir()
    (shared_tmp_path / "var").mkdir()
    (shared_tmp_path / "var/master").symlink_to(elsewhere)
    result = postbus(conf, "start")
    assert result.returncode == 1
    assert result.stderr == (f"postbus: fatal: unsafe directory {shared_tmp_path}/var/master:"
                             " not a directory; remove it\n")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(("setting", "message"), [
    ("mail_owner = no-such-user",
     "parameter mail_owner: unknown user name value: no-such-user"),
    ("mail_owner = root",
     "parameter mail_owner: user root has privileged user ID"),
    ("default_privs = postbus",
     "parameters default_privs and mail_owner specify the same user postbus"),
])
def test_start_refuses_a_bad_mail_owner_as_postfix_does(
    shared_tmp_path: Path, setting: str, message: str
) -> None:
    conf, _ = sample_config(shared_tmp_path, setting + "\n")
    result = postbus(conf, "start")
    if not ROOT:  # the roles run as the invoking user: mail_owner is not used
        postbus(conf, "stop")
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1
    assert result.stderr == f"postbus: fatal: file {conf}/main.cf: {message}\n"
    assert not state(shared_tmp_path)


def test_a_role_that_cannot_start_fails_the_start_with_its_fatal_line(
    shared_tmp_path: Path,
) -> None:
    conf, _ = sample_config(shared_tmp_path, "smtpd_recipient_restrictions = permit_mynetworks,"
                                             " bogus_restriction\n")
    line = len((conf / "main.cf").read_text().splitlines())
    result = postbus(conf, "start")
    done = time.time()
    assert result.returncode == 1, result.stdout
    fatal = (f"postbus/smtpd: fatal: {conf}/main.cf, line {line}: parameter"
             f' smtpd_recipient_restrictions: unknown smtpd restriction: "bogus_restriction"')
    assert result.stderr.splitlines()[0] == fatal, result.stderr
    assert "did not start" in result.stderr.splitlines()[-1]
    # soon after the failure (the time smtpd wrote its fatal line), all stopped: 5 s on an
    # idle machine; the bound is generous for a loaded one (every role has to exit)
    smtpd_stderr = next((shared_tmp_path / "var/master/stderr").glob("127.0.0.1_*"))
    assert done - smtpd_stderr.stat().st_mtime < 20.0
    last = state(shared_tmp_path)
    assert all(not alive(c["pid"]) for c in last["children"] if c["pid"])
    assert all(not alive(pid) for pid in last["server_pids"].values())
    maillog = (shared_tmp_path / "var/maillog").read_text()
    assert fatal.replace("postbus/smtpd: ", "") in maillog
    assert "unexpected error" not in maillog
    status = postbus(conf, "status")
    assert status.returncode == 1
    assert f"the last start failed:\n      {fatal}\n" in status.stdout


def test_a_role_that_keeps_dying_is_throttled(started: tuple[Path, Path]) -> None:
    conf, tmp_path = started
    maillog = tmp_path / "var/maillog"

    def qmgr() -> dict[str, Any]:
        return next(c for c in state(tmp_path)["children"] if c["label"] == "qmgr")

    killed: list[int] = []
    for _ in range(5):  # the first death may be late enough to restart at once
        child = wait_for(lambda: (c := qmgr())["state"] in ("starting", "running") and c)
        assert child, qmgr()
        os.kill(child["pid"], signal.SIGKILL)
        killed.append(child["pid"])
        throttled = wait_for(lambda: qmgr()["state"] == "throttled" or
                             qmgr()["pid"] != killed[-1], timeout=10)
        assert throttled
        if qmgr()["state"] == "throttled":
            break
    throttle = qmgr()
    assert throttle["state"] == "throttled"
    log = maillog.read_text()
    assert f"postbus/master[{state(tmp_path)['pid']}]: warning: process qmgr pid {killed[-1]}" \
           f" killed by signal 9\n" in log
    assert "warning: qmgr: bad command startup -- throttling\n" in log
    status = postbus(conf, "status")
    assert re.search(r"^  qmgr +throttled +pid - ", status.stdout, re.M), status.stdout
    assert f"      postbus/master: process qmgr pid {killed[-1]} killed by signal 9\n" \
           in status.stdout
    assert re.search(r"^  smtp +running +pid \d+ ", status.stdout, re.M), status.stdout
    # started again once service_throttle_time (2s) has passed, not before
    again = wait_for(lambda: (c := qmgr())["state"] == "running" and c, timeout=30)
    assert again and again["pid"] not in killed
    assert again["started"] - throttle["since"] >= 2.0 - 0.05
    with smtplib.SMTP("127.0.0.1", _smtp_port(conf), timeout=30) as client:
        client.sendmail("alice@example.com", ["bob@postbus.test"], "Subject: after\r\n\r\nx\r\n")
    assert wait_for(lambda: "status=sent" in maillog.read_text())


def _smtp_port(conf: Path) -> int:
    return int(re.search(r"^127\.0\.0\.1:(\d+) +inet .* smtpd$",  # type: ignore[union-attr]
                         (conf / "master.cf").read_text(), re.M).group(1))


def _free_privileged_port() -> int:
    for port in range(990, 600, -1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free port below 1024")


def test_smtpd_on_a_port_below_1024(shared_tmp_path: Path) -> None:
    """As root, smtpd runs as mail_owner and binds a privileged port with only
    CAP_NET_BIND_SERVICE; not as root, the start fails saying so."""
    port = _free_privileged_port() if ROOT else 587
    master = (REPO / "etc/postbus/master.cf").read_text().replace(
        "127.0.0.1:2525 ", f"127.0.0.1:{port} ")
    conf, _ = sample_config(shared_tmp_path, master_cf=master)
    result = postbus(conf, "start")
    try:
        if not ROOT:
            assert result.returncode == 1
            assert (f"postbus/smtpd: fatal: bind 127.0.0.1 port {port}: Permission denied"
                    " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)") in result.stderr
            return
        assert result.returncode == 0, result.stdout + result.stderr
        smtpd = next(c for c in state(shared_tmp_path)["children"] if c["command"] == "smtpd")
        assert uid_of(smtpd["pid"]) == pwd.getpwnam("postbus").pw_uid
        caps = re.search(r"^CapEff:\s+(\w+)", Path(f"/proc/{smtpd['pid']}/status").read_text(),
                         re.M)
        assert caps and int(caps.group(1), 16) == 1 << 10  # CAP_NET_BIND_SERVICE alone
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            assert client.noop()[0] == 250
    finally:
        postbus(conf, "stop")


def test_nats_server_runs_with_the_configured_go_processors(shared_tmp_path: Path) -> None:
    """postbus_nats_max_procs becomes the GOMAXPROCS of the nats-server that
    postbus start runs (0, the default, leaves Go's own)."""
    conf, _ = sample_config(shared_tmp_path, "postbus_nats_max_procs = 3\n")
    result = postbus(conf, "start")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        pid = state(shared_tmp_path)["server_pids"]["nats"]
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"GOMAXPROCS=3" in environ
    finally:
        postbus(conf, "stop")
