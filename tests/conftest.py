"""Shared fixtures: real nats-server, real redis-server, whole systems of processes."""

from __future__ import annotations

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
