"""Child process birth and death (≈ Postfix master_spawn.c).

Each child runs with its stdout and stderr in a file of its own,
``$data_directory/master/stderr/<service>``, emptied at each start: when the child
exits, the master reads its ``fatal:`` line there, for `postbus start` and
`postbus status` to show.

The throttle, as Postfix's master applies it: a child that dies before it
has served counts as a bad command startup (a configuration error, a port
in use, a missing resource), and its service is throttled: no new process
for ``service_throttle_time``, then one more try. A Postbus process serves
from the moment it is ready until it stops, so here "before it has served"
means before it was ready, or within service_throttle_time of its start (a
role that keeps dying right after it starts). A child that dies later is
started again at once.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from postbus import privs
from postbus.master_plan import Child

log = logging.getLogger("postbus.master")

STARTING, RUNNING, THROTTLED, FAILED = "starting", "running", "throttled", "failed"

_TAIL = 16384  # bytes of a child's stderr searched for its fatal line
# "Nov 25 13:18:27 mail postbus/smtpd[1234]: fatal: text" or "postbus/smtpd: fatal: text"
_FATAL = re.compile(r"^(?:\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ )?(\S+?)(?:\[\d+\])?: (fatal: .*)$")


@dataclass
class Process:
    """What the master knows of one child: its process, state and last failure."""

    child: Child
    proc: subprocess.Popen[bytes] | None = None
    state: str = STARTING
    since: float = field(default_factory=time.time)  # wall clock of the last state change
    started: float = 0.0  # monotonic start of the current process
    ready_at: float = 0.0  # monotonic time it became ready; 0: not yet
    started_at: float = 0.0  # wall clock of the current process's start
    throttled_until: float = 0.0  # monotonic
    last_fatal: str = ""
    user: str = ""

    def set_state(self, state: str) -> None:
        self.state, self.since = state, time.time()

    def status(self) -> dict[str, object]:
        return {"state": self.state, "since": self.since, "last_fatal": self.last_fatal,
                "user": self.user, "started": self.started_at}


class Spawner:
    """Starts children as the right user and deals with their deaths."""

    def __init__(self, ident: str, config_dir: Path, stderr_dir: Path,
                 owner: privs.Owner | None, throttle_time: float) -> None:
        self.ident = ident  # the master's log name, postbus/master
        self.config_dir = config_dir
        self.stderr_dir = stderr_dir
        self.owner = owner
        self.throttle_time = throttle_time
        stderr_dir.mkdir(parents=True, exist_ok=True)

    def stderr_path(self, child: Child) -> Path:
        return self.stderr_dir / re.sub(r"[^A-Za-z0-9._-]", "_", child.label)

    def spawn(self, run: Process) -> bool:
        """Start the child; False (and its reason in last_fatal) when it cannot be."""
        child = run.child
        owner = self.owner if child.unpriv else None
        run.user = owner.name if owner else ("root" if self.owner else "")
        with open(self.stderr_path(child), "wb") as err:
            try:
                run.proc = subprocess.Popen(
                    child.argv(self.config_dir), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                    **privs.spawn_options(owner, child.listen_port, child.groups),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                run.proc = None
                reason = getattr(exc, "strerror", None) or str(exc)
                who = f" as user {owner.name}" if owner else ""
                program = child.argv(self.config_dir)[0]
                text = f"{child.label}: cannot execute {program}{who}: {reason}"
                if owner and isinstance(exc, PermissionError):
                    text += f" (every directory above it must be searchable by {owner.name})"
                log.error("%s", text)
                run.last_fatal = f"{self.ident}: fatal: {text}"
                run.set_state(FAILED)
                return False
        child.pid = run.proc.pid
        run.started, run.ready_at, run.started_at = time.monotonic(), 0.0, time.time()
        run.set_state(STARTING)
        return True

    def ready(self, run: Process) -> None:
        run.ready_at = time.monotonic()
        run.set_state(RUNNING)

    def reap(self, run: Process) -> bool:
        """True when the child has exited; logs how, as Postfix's master does,
        and keeps its fatal line."""
        if run.proc is None or run.proc.poll() is None:
            return False
        status, pid, path = run.proc.returncode, run.proc.pid, run.child.command
        how = f"exit status {status}" if status >= 0 else f"killed by signal {-status}"
        if status != 0:
            log.warning("warning: process %s pid %d %s", path, pid, how)
        # its own fatal line, else how it ended (a signal leaves no line)
        ended = f"{self.ident}: process {path} pid {pid} {how}"
        run.last_fatal = self.fatal_line(run.child) or ended
        run.proc = None
        run.set_state(FAILED)
        return True

    def after_exit(self, run: Process) -> None:
        """Start a dead child again now, or throttle its service (bad startup)."""
        bad_startup = not run.ready_at or time.monotonic() - run.started < self.throttle_time
        if bad_startup or not self.spawn(run):
            self.throttle(run)

    def throttle(self, run: Process) -> None:
        log.warning("warning: %s: bad command startup -- throttling", run.child.command)
        run.throttled_until = time.monotonic() + self.throttle_time
        run.set_state(THROTTLED)

    def fatal_line(self, child: Child) -> str:
        """The last ``fatal:`` line the child wrote, as ``postbus/smtpd: fatal: text``."""
        try:
            with open(self.stderr_path(child), "rb") as err:
                size = err.seek(0, 2)
                err.seek(max(0, size - _TAIL))
                lines = err.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            text = _fatal_text(line.strip())
            if text:
                return text
        return ""


def _fatal_text(line: str) -> str:
    if line.startswith("{"):  # postbus_log_format = json
        try:
            record = json.loads(line)
        except ValueError:
            return ""
        if isinstance(record, dict) and record.get("level") == "critical":
            return f"{record.get('program')}: fatal: {record.get('message')}"
        return ""
    match = _FATAL.match(line)
    return f"{match.group(1)}: {match.group(2)}" if match else ""
