"""The child servers' settings (postbus.servers)."""

from __future__ import annotations

import os
from pathlib import Path

from postbus.servers import nats_max_procs, nats_server


def test_nats_max_procs_is_the_setting_or_half_the_cpus() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert nats_max_procs(5) == 5
    assert nats_max_procs(0) == max(1, cpus // 2)
    assert nats_max_procs(0) >= 1


def test_nats_server_passes_gomaxprocs_in_its_environment(tmp_path: Path) -> None:
    server = nats_server(tmp_path, max_procs=2).start()
    try:
        assert server.proc is not None
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"GOMAXPROCS=2" in environ
        assert f"PATH={os.environ['PATH']}".encode() in environ  # added to, not replaced
    finally:
        server.stop()
