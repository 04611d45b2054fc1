"""qmgr processes on a real nats-server, as many replicas as a test asks for."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from postbus.servers import ServerProcess, free_port

_T = TypeVar("_T")

#: Deferred mail waits an hour: what moves it is a flush, nothing else.
MAIN_CF = """\
myhostname = mail.postbus.test
mydestination = $myhostname
relayhost = [127.0.0.1]:9
transport_maps = inline:{ {later.test=retry:4.4.1 try again later}, \
{other.test=retry:4.4.1 not now} }
minimal_backoff_time = 1h
maximal_backoff_time = 1h
postbus_queue_scan_interval = 1s
"""


@dataclass
class Qmgrs:
    """Replicas of the qmgr, each with its own log and metrics port."""

    conf: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def start(self, count: int) -> Qmgrs:
        for index in range(len(self.procs), len(self.procs) + count):
            log_path = self.conf.parent / f"qmgr{index}.out"
            port = free_port()
            with open(log_path, "wb") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "qmgr", "-c", str(self.conf), "-n", "qmgr",
                     "--metrics", f"127.0.0.1:{port}"],
                    stdout=log, stderr=subprocess.STDOUT,
                ))
            self.logs.append(log_path)
            self.ports.append(port)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)

    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs)

    def scrape(self, index: int) -> dict[str, float]:
        """postbus_queue_messages of one replica, by queue."""
        url = f"http://127.0.0.1:{self.ports[index]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        found = re.findall(r'^postbus_queue_messages\{queue="(\w+)"\} ([\d.]+)$', text, re.M)
        return {name: float(value) for name, value in found}


def write_conf(tmp_path: Path, nats: ServerProcess, redis: ServerProcess, extra: str = "") -> Path:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(
        f"postbus_nats_url = {nats.url}\npostbus_redis_url = {redis.url}/0\n"
        f"{MAIN_CF}data_directory = {tmp_path}\n{extra}")
    (conf / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    return conf


async def until(check: Callable[[], Awaitable[_T]], timeout: float = 20.0) -> _T:
    """The first truthy result of ``check``; AssertionError with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            assert result, f"never came true: last {result!r}"
            return result
        await asyncio.sleep(0.1)


def postbus(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
        capture_output=True, text=True, timeout=60,
    )
