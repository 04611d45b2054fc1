"""The child servers' settings (postbus.servers)."""

from __future__ import annotations

import os
from pathlib import Path

from postbus import servers
from postbus.servers import nats_server


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
