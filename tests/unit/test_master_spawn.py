"""Child birth and death: the fatal line a child leaves, and the throttle."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from postbus.master_plan import Child
from postbus.master_spawn import RUNNING, STARTING, THROTTLED, Process, Spawner


def spawner(tmp_path: Path, throttle: float = 60.0) -> Spawner:
    return Spawner("postbus/master", tmp_path, tmp_path / "stderr", None, throttle)


def exited(s: Spawner, run: Process) -> None:
    deadline = time.monotonic() + 30
    while not s.reap(run):
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("line", [
    'Nov 25 13:18:27 mail postbus/smtpd[1234]: fatal: bind 127.0.0.1 port 25: Address in use',
    "postbus/smtpd: fatal: bind 127.0.0.1 port 25: Address in use",
    '{"time": 1.0, "host": "mail", "program": "postbus/smtpd", "pid": 1234,'
    ' "level": "critical", "message": "bind 127.0.0.1 port 25: Address in use"}',
])
def test_fatal_line_in_each_log_format(tmp_path: Path, line: str) -> None:
    s = spawner(tmp_path)
    child = Child("smtpd", "smtpd", "ingress_smtpd", 0, 9100)
    s.stderr_path(child).write_text(f"Nov 25 13:18:26 mail postbus/smtpd[1234]: warning: x\n"
                                    f"{line}\n")
    assert s.fatal_line(child) == "postbus/smtpd: fatal: bind 127.0.0.1 port 25: Address in use"


def test_a_child_that_dies_at_startup_is_throttled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "postbus.master")
    s = spawner(tmp_path)
    run = Process(Child("qmgr", "qmgr", "postbus_no_such_role", 0, 9100))
    assert s.spawn(run) and run.state == STARTING
    pid = run.child.pid
    exited(s, run)
    s.after_exit(run)
    assert run.state == THROTTLED and run.proc is None
    assert run.throttled_until - time.monotonic() > 55
    assert run.last_fatal == f"postbus/master: process qmgr pid {pid} exit status 1"
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: process qmgr pid {pid} exit status 1",
        "warning: qmgr: bad command startup -- throttling",
    ]


def test_a_child_that_served_long_enough_is_started_again_at_once(tmp_path: Path) -> None:
    s = spawner(tmp_path, throttle=1.0)
    run = Process(Child("qmgr", "qmgr", "postbus_no_such_role", 0, 9100))
    s.spawn(run)
    s.ready(run)  # as if it had answered /readyz
    assert run.state == RUNNING
    exited(s, run)
    run.started -= 2.0  # it ran for longer than service_throttle_time
    first = run.child.pid
    s.after_exit(run)
    assert run.state == STARTING and run.child.pid != first
    exited(s, run)
    s.after_exit(run)  # this one never became ready: bad startup
    assert run.state == THROTTLED
