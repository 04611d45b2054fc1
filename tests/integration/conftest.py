"""Fixtures for integration tests: a qmgr process and a Bus on a real nats-server."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from postbus.bus.jetstream import connect, ensure_streams
from postbus.queue.admin import Bus
from postbus.queue.file import QueueFile
from postbus.queue.work import WorkBus
from postbus.servers import ServerProcess, free_port


@contextlib.contextmanager
def running_qmgr(tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> Iterator[Path]:
    """A qmgr process on its own test configuration; yields its log."""
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"postbus_nats_url = {nats.url}\n"
        f"postbus_redis_url = {redis.url}/0\n"
        "myhostname = mail.postbus.test\n"
        "mydestination = $myhostname, postbus.test\n"
        "relayhost = [127.0.0.1]:2526\n"
        "transport_maps = inline:{ {blocked.test=error:5.7.1 no mail here}, "
        "gone.test=discard:, slow.test=relay:[10.0.0.1], "
        "{later.test=retry:4.4.1 try again later} }\n"
        "relocated_maps = inline:{{moved@postbus.test=moved@new.example}}\n"
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n"
        "postbus_queue_scan_interval = 1s\n"
        f"data_directory = {tmp_path}\n"
    )
    (conf / "master.cf").write_text("qmgr unix n - n 300 1 qmgr\n")
    log = open(tmp_path / "qmgr.out", "wb")  # noqa: SIM115
    metrics_port = free_port()
    (tmp_path / "metrics.port").write_text(str(metrics_port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmgr", "-c", str(conf), "-n", "qmgr",
         "--metrics", f"127.0.0.1:{metrics_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        yield tmp_path / "qmgr.out"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def qmgr(tmp_path: Path, nats: ServerProcess, redis: ServerProcess) -> Iterator[Path]:
    with running_qmgr(tmp_path, nats, redis) as log:
        yield log


@pytest.fixture
async def store(nats: ServerProcess) -> AsyncIterator[Bus]:
    nc = await connect(nats.url, "test")
    await ensure_streams(nc.jetstream())
    js = nc.jetstream()
    yield Bus(QueueFile(nc, js), WorkBus(nc, js))
    await nc.close()


