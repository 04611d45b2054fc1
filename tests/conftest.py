"""Shared fixtures: real nats-server, real redis-server, whole systems of processes."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from postbus import servers
from postbus.servers import ServerProcess, nats_server, redis_server
from tests.harness import MailSystem


def worker_ports(environ: Mapping[str, str]) -> str | None:
    """POSTBUS_TEST_PORTS for a pytest-xdist worker (gw0, gw1 ...): its own slice of the
    range free_port picks from (POSTBUS_TEST_PORTS if set, else all of it), so two workers
    never pick the same port; inherited by what the tests start (`postbus start` picks the
    nats monitoring port itself). None outside xdist."""
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    count = int(environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not (worker.startswith("gw") and worker[2:].isdigit()) or count < 1:
        return None
    low, high = servers.port_range(environ)
    size = (high - low) // count
    start = low + int(worker[2:]) * size
    return f"{start}-{start + size}"


def pytest_configure(config: pytest.Config) -> None:
    if (ports := worker_ports(os.environ)) is not None:
        os.environ["POSTBUS_TEST_PORTS"] = ports


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[ServerProcess]:
    server = nats_server(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[ServerProcess]:
    server = redis_server(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def mail_system(tmp_path: Path) -> Iterator[MailSystem]:
    system = MailSystem(tmp_path)
    yield system
    system.stop()


@pytest.fixture
def shared_tmp_path(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tmp_path that processes of another user can enter: as root, `postbus
    start` runs the roles as mail_owner, and pytest's tmp_path lies in
    /tmp/pytest-of-root, which pytest makes 0700 again at each session start
    (another session's included). So as root this is a directory of its own
    in /tmp, searchable by others (0711: its names stay unlistable), removed
    afterwards; otherwise tmp_path."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    name = re.sub(r"[^\w.-]", "_", request.node.name)[:40]
    path = Path(tempfile.mkdtemp(prefix=f"postbus-{name}-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
