"""A policy service process on loopback with its own main.cf (for the integration tests)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from postbus.servers import free_port


@dataclass
class PolicyProcess:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    seen: int = 0

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 30) -> str:
        """The first log line after those already matched that contains ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.output().splitlines()
            for n, line in enumerate(lines[self.seen:], self.seen):
                if text in line:
                    self.seen = n + 1
                    return line
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()}"
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(10) == 0, self.output()
        assert "Traceback" not in self.output(), self.output()


def start_policy(tmp: Path, main_cf: str, name: str = "policy", *, port: int = 0,
                 maxproc: str = "-") -> PolicyProcess:
    """One policy process; ``port`` and ``maxproc`` for another process of the same line."""
    conf = tmp / name
    conf.mkdir()
    port, metrics = port or free_port(), free_port()
    (conf / "main.cf").write_text(f"data_directory = {tmp}\n{main_cf}")
    (conf / "master.cf").write_text(f"127.0.0.1:{port} inet n - n - {maxproc} policy\n")
    log = conf / "policy.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "policy", "-c", str(conf), "-n", f"127.0.0.1:{port}",
             "--metrics", f"127.0.0.1:{metrics}"],
            stdout=out, stderr=subprocess.STDOUT)
    server = PolicyProcess(port, log, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{metrics}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"policy did not start:\n{server.output()}")
        time.sleep(0.05)
    server.metrics = metrics  # type: ignore[attr-defined]
    return server
