"""Shared fixtures: real nats-server, real redis-server, whole systems of processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbus.servers import ServerProcess, nats_server, redis_server
from tests.harness import MailSystem


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
def shared_tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp_path that processes of another user can enter: as root, `postbus start`
    runs the roles as mail_owner, and pytest makes each level of tmp_path 0700.
    Adds search permission only (o+x: the names inside stay unlistable), from
    tmp_path up to pytest's own directory; pytest makes it 0700 again next session."""
    if os.geteuid() == 0:
        top = tmp_path_factory.getbasetemp().parent  # /tmp/pytest-of-root
        for path in (tmp_path, *tmp_path.parents):
            path.chmod(path.stat().st_mode | 0o111)
            if path == top:
                break
    return tmp_path
