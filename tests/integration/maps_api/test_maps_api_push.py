"""Tables into a cluster from outside it: ``postbus postmap --push`` through maps-api,
and a table compiled before the start served by maps-api without any role's help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from postbus.servers import free_port
from tests.integration.maps_api.conftest import TOKEN, MapsApi

pytestmark = pytest.mark.integration

POSTBUS = [sys.executable, "-m", "postbus.cli.main"]


def outside(tmp_path: Path) -> Path:
    """An administrator's machine: its own main.cf, no Redis it can reach."""
    conf = tmp_path / "laptop"
    conf.mkdir()
    (conf / "main.cf").write_text(f"postbus_redis_url = redis://127.0.0.1:{free_port()}/0\n")
    return conf


def postmap(conf: Path, *args: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POSTBUS_MAPS_API_TOKEN"}
    if token is not None:
        env["POSTBUS_MAPS_API_TOKEN"] = token
    proc = subprocess.run([*POSTBUS, "-c", str(conf), "postmap", *args], capture_output=True,
                          text=True, timeout=60, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def lookup(api: MapsApi, spec: str, key: str) -> httpx.Response:
    return httpx.get(f"{api.url}/v1/tables/{spec}/lookup", params={"key": key})


def test_push_builds_locally_and_replaces_the_cluster_table(maps_api: MapsApi,
                                                           tmp_path: Path) -> None:
    conf = outside(tmp_path)
    source = tmp_path / "virtual"
    source.write_text("Bob@Example.com bob\n@example.org catchall\n")
    spec = f"hash:{source}"
    assert postmap(conf, f"--push={maps_api.url}", spec) == (0, "", "")
    assert lookup(maps_api, spec, "bob@example.com").json()["value"] == "bob"
    assert postmap(conf, "-q", "@example.org", spec) == (0, "catchall\n", "")  # local copy
    source.write_text("carol@example.com carol\n")
    assert postmap(conf, f"--push={maps_api.url}/", spec) == (0, "", "")
    assert lookup(maps_api, spec, "bob@example.com").status_code == 404
    assert lookup(maps_api, spec, "carol@example.com").json()["value"] == "carol"
    assert postmap(conf, f"--push={maps_api.url}", "-d", "carol@example.com", spec) == (0, "", "")
    assert lookup(maps_api, spec, "carol@example.com").status_code == 404


def test_push_failures_are_fatal_with_the_reason(maps_api: MapsApi, tmp_path: Path) -> None:
    conf = outside(tmp_path)
    source = tmp_path / "virtual"
    source.write_text("a b\n")
    spec = f"hash:{source}"
    assert postmap(conf, f"--push={maps_api.url}", spec, token="wrong") == (
        1, "", f"postmap: fatal: push {spec} to {maps_api.url}: HTTP 401:"
               " bad or missing bearer token\n")
    dead = f"http://127.0.0.1:{free_port()}"
    rc, _, err = postmap(conf, f"--push={dead}", spec)
    assert rc == 1 and err.startswith(f"postmap: fatal: push {spec} to {dead}: ")
    assert "Connection refused" in err
    assert postmap(conf, f"--push={maps_api.url}", "-q", "a", spec) == (
        1, "", "postmap: fatal: --push changes tables: it cannot be used with -q or -s\n")
    assert postmap(conf, f"--push={maps_api.url}", "-f", spec) == (
        1, "", "postmap: fatal: --push cannot be used with -f:"
               " maps-api stores keys in lower case\n")


def test_table_compiled_before_the_start_is_served(maps_api: MapsApi, tmp_path: Path) -> None:
    source = tmp_path / "access"
    source.write_text("alice@example.com OK\n")
    assert postmap(outside(tmp_path), f"hash:{source}") == (0, "", "")  # Redis not reached
    assert lookup(maps_api, f"hash:{source}", "Alice@Example.com").json() == {
        "table": f"hash:{source}", "key": "Alice@Example.com", "found": True, "value": "OK"}
    assert lookup(maps_api, f"hash:{tmp_path}/never", "k").status_code == 403
