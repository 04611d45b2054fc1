"""The process supervisor behind `postbus start` (≈ Postfix master(8)).

It reads master.cf, maps each line's command to the Postbus role that does
that work, starts NATS and Redis (unless told to use existing ones), runs
one process per role line (``maxproc`` of them for the roles that scale),
restarts a child that dies, and stops everything on SIGTERM.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from postbus.config.loader import Config
from postbus.config.master_cf import MasterEntry
from postbus.servers import ServerProcess, nats_server, pid_alive, redis_server

log = logging.getLogger("postbus.master")

# master.cf command -> Python module of the role that runs it
ROLE_MODULES = {
    "smtpd": "ingress_smtpd",
    "qmgr": "qmgr",
    "oqmgr": "qmgr",
    "smtp": "delivery_smtp",
    "lmtp": "delivery_smtp",
    "local": "delivery_local",
    "virtual": "delivery_local",
    "policy": "policy",
    "content-filter": "content_filter",
    "maps-api": "maps_api",
}
# Postfix daemons whose work a Postbus role already does: no process of their own.
BUILT_IN = {
    "cleanup": "ingress-smtpd",
    "trivial-rewrite": "qmgr",
    "bounce": "qmgr",
    "defer": "qmgr",
    "trace": "qmgr",
    "verify": "qmgr",
    "flush": "qmgr",
    "showq": "postbus postqueue",
    "error": "qmgr",
    "retry": "qmgr",
    "discard": "qmgr",
    "proxymap": "maps-api",
    "proxywrite": "maps-api",
    "anvil": "ingress-smtpd",
    "scache": "delivery-smtp",
    "tlsmgr": "ingress-smtpd",
    "postlog": "every service (maillog_file)",
    "postlogd": "every service (maillog_file)",
    "pickup": "postbus sendmail",
}
SCALING = {"ingress_smtpd", "delivery_smtp", "delivery_local", "policy", "content_filter"}


@dataclass
class Child:
    service: str
    command: str
    module: str
    index: int
    metrics_port: int
    type: str = "unix"
    pid: int = 0
    listen: str = ""
    shared_name: bool = False  # another master.cf line has the same service name

    @property
    def label(self) -> str:
        name = f"{self.service}/{self.type}" if self.shared_name else self.service
        return f"{name}#{self.index}" if self.index else name

    def argv(self, config_dir: Path | str) -> list[str]:
        """The command line that runs this child (also used by the test harness)."""
        return [
            sys.executable, "-m", self.module,
            "-c", str(config_dir),
            "-n", f"{self.service}/{self.type}",
            "--metrics", f"127.0.0.1:{self.metrics_port}",
        ]


def plan(cfg: Config) -> tuple[list[Child], list[str]]:
    """The children master.cf asks for, and a note for each line not run."""
    children: list[Child] = []
    notes: list[str] = []
    port = cfg.int("postbus_metrics_port")
    for entry in cfg.master:
        module = ROLE_MODULES.get(entry.command)
        if module is None:
            role = BUILT_IN.get(entry.command)
            if role is None:
                notes.append(
                    f"{entry.file}, line {entry.line}: service {entry.service}: "
                    f"command {entry.command} is not supported by Postbus; not started"
                )
            continue
        count = _process_count(entry) if module in SCALING else 1
        for index in range(count):
            listen = ""
            if entry.type == "inet":
                addr = entry.listen_address()
                if addr:
                    listen = f"{addr[0] or '0.0.0.0'}:{addr[1]}"
            children.append(
                Child(entry.service, entry.command, module, index, port, entry.type, listen=listen)
            )
            port += 1
    names = [e.service for e in cfg.master]
    for child in children:
        child.shared_name = names.count(child.service) > 1
    return children, notes


def _process_count(entry: MasterEntry) -> int:
    """maxproc as a process count; Postfix's "-"/100 default means one process here,
    because each Postbus process already serves many sessions concurrently."""
    value = entry.maxproc
    if value in ("-", "", None):
        return 1
    count = int(value)
    return 1 if count <= 0 or count >= 100 else count


def state_path(cfg: Config) -> Path:
    return Path(cfg.get("data_directory")) / "master.state"


class Master:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data = Path(cfg.get("data_directory"))
        self.children, self.notes = plan(cfg)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.servers: list[ServerProcess] = []
        self.stopping = False

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
        )
        redis = redis_server(
            Path(self.cfg.get("postbus_redis_dir")),
            port=redis_url.port or 6379,
            host=redis_url.hostname or "127.0.0.1",
        )
        for server in (nats, redis):
            server.start()
            self.servers.append(server)

    def spawn(self, child: Child) -> None:
        proc = subprocess.Popen(child.argv(self.cfg.config_dir), stdin=subprocess.DEVNULL)
        child.pid = proc.pid
        self.procs[child.label] = proc

    def write_state(self, ready: bool) -> None:
        state = {
            "pid": os.getpid(),
            "ready": ready,
            "children": [asdict(c) for c in self.children],
            "notes": self.notes,
            "servers": {s.name: s.url for s in self.servers},
        }
        tmp = state_path(self.cfg).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(state_path(self.cfg))

    def run(self) -> int:
        self.data.mkdir(parents=True, exist_ok=True)
        for note in self.notes:
            log.warning("%s", note)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self.start_servers()
            for child in self.children:
                self.spawn(child)
            self.write_state(ready=False)
            self._wait_ready()
            self.write_state(ready=True)
            self._supervise()
        finally:
            self._stop_all()
            with contextlib.suppress(FileNotFoundError):
                state_path(self.cfg).unlink()
        return 0

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every child answers /readyz, so `postbus start` returns
        only when mail can flow; a child that is slow is reported, not fatal."""
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and time.monotonic() < deadline and not self.stopping:
            pending = [c for c in pending if not _ready(c.metrics_port)]
            if pending:
                time.sleep(0.1)
        for child in pending:
            log.warning("warning: %s is not ready after %.0fs", child.label, timeout)

    def _supervise(self) -> None:
        while not self.stopping:
            time.sleep(0.2)
            for child in self.children:
                proc = self.procs.get(child.label)
                if proc is not None and proc.poll() is not None and not self.stopping:
                    log.warning(
                        "warning: process %s pid %d exit status %s; restarting",
                        child.label, proc.pid, proc.returncode,
                    )
                    time.sleep(1.0)
                    self.spawn(child)
                    self.write_state(ready=True)

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, frame: object) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGHUP)

    def _stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in reversed(self.servers):
            server.stop()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def read_state(cfg: Config) -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads(state_path(cfg).read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return None
    return state


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config_dir = args[args.index("-c") + 1] if "-c" in args else None
    cfg = Config.load(config_dir)
    from postbus.logging import setup_logging

    setup_logging(
        f"{cfg.get('syslog_name')}/master",
        cfg.get("myhostname"),
        maillog_file=cfg.get("maillog_file"),
    )
    return Master(cfg).run()


if __name__ == "__main__":
    sys.exit(main())
