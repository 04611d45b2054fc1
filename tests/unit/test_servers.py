"""The child servers' settings (postbus.servers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from postbus import servers
from postbus.servers import nats_server
from tests.conftest import worker_ports


def test_nats_server_passes_gomaxprocs_in_its_environment(tmp_path: Path) -> None:
    server = nats_server(tmp_path, max_procs=2).start()
    try:
        assert server.proc is not None
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"GOMAXPROCS=2" in environ
        assert f"PATH={os.environ['PATH']}".encode() in environ  # added to, not replaced
    finally:
        server.stop()


def test_nats_server_keeps_gos_default_unless_told(tmp_path: Path) -> None:
    server = nats_server(tmp_path).start()
    try:
        assert server.proc is not None
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        inherited = os.environ.get("GOMAXPROCS")
        assert [v for v in environ if v.startswith(b"GOMAXPROCS=")] == (
            [f"GOMAXPROCS={inherited}".encode()] if inherited is not None else [])
    finally:
        server.stop()


def test_free_port_never_hands_out_a_port_twice() -> None:
    """A port picked for one server but not bound yet (or freed while that server
    restarts) must not be given to the next server: CI once failed on exactly that."""
    ports = [servers.free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= port < 32000 for port in ports)


def test_free_port_keeps_to_postbus_test_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pytest-xdist worker picks from a slice of its own (tests/conftest.py)."""
    monkeypatch.setenv("POSTBUS_TEST_PORTS", "20000-20100")
    ports = [servers.free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(20000 <= port < 20100 for port in ports)


def test_free_port_reserves_a_span_of_consecutive_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """A MailSystem's roles take metrics ports counting up from one free_port: no later
    free_port hands out one of them, and the span stays inside the slice."""
    monkeypatch.setenv("POSTBUS_TEST_PORTS", "21000-21050")
    for _ in range(20):
        base = servers.free_port(span=7)
        assert base >= 21000 and base + 7 <= 21050
        others = {servers.free_port() for _ in range(20)}
        assert not others & set(range(base, base + 7))


def test_worker_ports_are_disjoint_slices() -> None:
    slices = [worker_ports({"PYTEST_XDIST_WORKER": f"gw{n}", "PYTEST_XDIST_WORKER_COUNT": "3"})
              for n in range(3)]
    assert slices == ["10000-17333", "17333-24666", "24666-31999"]
    assert worker_ports({"POSTBUS_TEST_PORTS": "20000-20100", "PYTEST_XDIST_WORKER": "gw1",
                         "PYTEST_XDIST_WORKER_COUNT": "2"}) == "20050-20100"
    assert worker_ports({}) is None
