"""The process supervisor behind `postbus start` (≈ Postfix master(8)).

It reads master.cf (:mod:`postbus.master_plan`), checks mail_owner and
prepares data_directory when started as root (:mod:`postbus.privs`), starts
NATS and Redis (unless told to use existing ones), runs one process per role
line, and stops everything on SIGTERM. Children are started, reaped and
throttled by :mod:`postbus.master_spawn`.

`postbus start` must fail fast and say why: a child that exits before every
role is ready stops the whole start; the master writes the child's fatal
line to the state file (``$data_directory/master/master.state``) and exits 1.
The master's own files (state, each child's stderr, the servers' config and
logs) live in ``$data_directory/master/``, which stays root's when mail_owner
owns the rest.
Afterwards a child that dies is started again, or throttled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

from postbus import privs
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.master_plan import ROLE_MODULES, Child, plan
from postbus.master_spawn import RUNNING, STARTING, THROTTLED, Process, Spawner
from postbus.servers import ServerProcess, nats_server, pid_alive, redis_server
from postbus.tls import ServerTlsSettings

__all__ = [
    "ROLE_MODULES", "Child", "Master", "main", "master_dir", "plan", "read_state", "state_path",
]

log = logging.getLogger("postbus.master")

READY_TIMEOUT = 60.0  # a child slower than this to be ready is reported, not fatal
STOP_GRACE = 20.0  # seconds children get to drain on stop
FAILED_START_GRACE = 3.0  # ... when a failed start stops what it started


def master_dir(cfg: Config) -> Path:
    return Path(cfg.get("data_directory")) / "master"


def state_path(cfg: Config) -> Path:
    return master_dir(cfg) / "master.state"


class Master:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ident = f"{cfg.get('syslog_name')}/master"
        self.children, self.notes = plan(cfg)
        self.runs = [Process(child) for child in self.children]
        self.servers: list[ServerProcess] = []
        self.owner: privs.Owner | None = None
        self.private: Path | None = None  # master_dir(), as privs.private_directory() opened it
        self.failures: list[str] = []
        self.ready = False
        self.stopping = False

    def run(self) -> int:
        for note in self.notes:
            log.warning("%s", note)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self._start()
            if not self.failures:
                self._supervise()
        except (ConfigError, OSError) as exc:  # mail_owner, directories, nats or redis
            log.critical("%s", exc)
            self.failures.append(f"{self.ident}: fatal: {exc}")
        finally:
            self._stop_all(FAILED_START_GRACE if self.failures else STOP_GRACE)
            if self.failures:
                with contextlib.suppress(OSError):
                    self.write_state()  # `postbus start` and `status` show why
            elif self.private:
                with contextlib.suppress(FileNotFoundError):
                    (self.private / "master.state").unlink()
        return 1 if self.failures else 0

    def _start(self) -> None:
        if privs.started_as_root():
            self.owner = privs.check_mail_owner(self.cfg)
            for run in self.runs:
                run.child.groups = tuple(self._key_groups(run.child))
        privs.prepare_directories(self.cfg, self.owner)
        self.private = privs.private_directory(master_dir(self.cfg))
        self.spawner = Spawner(
            self.ident, self.cfg.config_dir, self.private / "stderr",
            self.owner, self.cfg.time("service_throttle_time"),
        )
        self.write_state()
        self.start_servers()
        for run in self.runs:
            if not self.spawner.spawn(run):
                self.failures.append(run.last_fatal)
                return
        self.write_state()
        self._wait_ready()
        if not self.failures:
            self.ready = True
            self.write_state()

    def _key_groups(self, child: Child) -> list[int]:
        """The groups an smtpd process needs to read its TLS keys and certificates as
        mail_owner (Postfix's smtpd reads them as root, before it drops privileges)."""
        if self.owner is None or child.module != "ingress_smtpd" or not child.unpriv:
            return []
        try:
            tls = ServerTlsSettings.from_config(
                self.cfg.for_service(f"{child.service}/{child.type}"))
        except ConfigError:
            return []  # the child says what is wrong when it starts
        return privs.reading_groups(self.owner, tls.files()) if tls.use_tls else []

    def start_servers(self) -> None:
        if not self.cfg.bool("postbus_start_servers"):
            return
        nats_url = urlparse(self.cfg.get("postbus_nats_url"))
        redis_url = urlparse(self.cfg.get("postbus_redis_url"))
        nats = nats_server(
            Path(self.cfg.get("postbus_nats_dir")),
            port=nats_url.port or 4222,
            monitor_port=self.cfg.int("postbus_nats_monitor_port"),
            host=nats_url.hostname or "127.0.0.1",
            run_dir=master_dir(self.cfg),
            max_procs=self.cfg.int("postbus_nats_max_procs"),
        )
        redis = redis_server(
            Path(self.cfg.get("postbus_redis_dir")),
            port=redis_url.port or 6379,
            host=redis_url.hostname or "127.0.0.1",
            run_dir=master_dir(self.cfg),
        )
        for server in (nats, redis):
            server.write_dir = self.private
            server.start(**privs.spawn_options(self.owner))
            self.servers.append(server)

    def _wait_ready(self) -> None:
        """Wait until every child answers /readyz, so `postbus start` returns only
        when mail can flow. A child that exits meanwhile fails the start."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not self.stopping:
            for run in self.runs:
                if self.spawner.reap(run):
                    self.failures.append(run.last_fatal or f"{run.child.label}: exited")
                    return
                if run.state == STARTING and _ready(run.child.metrics_port):
                    self.spawner.ready(run)
            if all(run.state == RUNNING for run in self.runs):
                return
            time.sleep(0.1)
        for run in self.runs:
            if run.state == STARTING:
                log.warning("warning: %s is not ready after %.0fs", run.child.label, READY_TIMEOUT)

    def _supervise(self) -> None:
        while not self.stopping:
            time.sleep(0.2)
            changed = False
            for run in self.runs:
                if self.stopping:
                    break
                if run.state == THROTTLED:
                    if time.monotonic() >= run.throttled_until:
                        if not self.spawner.spawn(run):
                            self.spawner.throttle(run)
                        changed = True
                elif self.spawner.reap(run):
                    self.spawner.after_exit(run)
                    changed = True
                elif run.state == STARTING and _ready(run.child.metrics_port):
                    self.spawner.ready(run)
                    changed = True
            if changed:
                self.write_state()

    def write_state(self) -> None:
        if self.private is None:
            return
        state = {
            "pid": os.getpid(),
            "ready": self.ready,
            "failures": self.failures,
            "children": [asdict(run.child) | {"label": run.child.label} | run.status()
                         for run in self.runs],
            "notes": self.notes,
            "servers": {s.name: s.url for s in self.servers},
            "server_pids": {s.name: s.proc.pid for s in self.servers if s.proc},
            "user": self.owner.name if self.owner else "",
        }
        tmp = self.private / "master.state.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.private / "master.state")

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: object) -> None:
        for run in self.runs:
            if run.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    run.proc.send_signal(signal.SIGHUP)

    def _stop_all(self, grace: float) -> None:
        procs = [run.proc for run in self.runs if run.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server in reversed(self.servers):
            server.stop()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def read_state(cfg: Config, running: bool = True) -> dict[str, object] | None:
    """The state file; with ``running``, only while its master runs."""
    try:
        state: dict[str, object] = json.loads(state_path(cfg).read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = state.get("pid")
    if running and (not isinstance(pid, int) or not pid_alive(pid)):
        return None
    return state


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config_dir = args[args.index("-c") + 1] if "-c" in args else None
    try:
        cfg = Config.load(config_dir)
    except ConfigError as exc:
        print(f"postbus/master: fatal: {exc}", file=sys.stderr)
        return 1
    from postbus.logging import setup_logging

    maillog = cfg.get("maillog_file")
    if maillog and privs.started_as_root() and not maillog.startswith("/dev/"):
        Path(maillog).parent.mkdir(parents=True, exist_ok=True)
        maillog = f"/proc/self/fd/{privs.open_log(maillog)}"  # no link followed as root
    setup_logging(f"{cfg.get('syslog_name')}/master", cfg.get("myhostname"), maillog_file=maillog)
    return Master(cfg).run()


if __name__ == "__main__":
    sys.exit(main())
