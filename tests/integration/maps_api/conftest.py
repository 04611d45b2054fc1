"""A maps-api process on free ports, with real redis-server and nats-server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from postbus.servers import ServerProcess, free_port

TOKEN = "s3cret-token"

POSTMAP = shutil.which("postmap") or (
    "/usr/sbin/postmap" if os.access("/usr/sbin/postmap", os.X_OK) else None
)


@dataclass
class MapsApi:
    url: str
    socketmap_port: int
    tcp_port: int
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def headers(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_maps_api(tmp_path: Path, redis: ServerProcess, nats: ServerProcess,
                   extra: str = "") -> MapsApi:
    """A running maps-api; a free port taken by someone else meanwhile (free_port()
    only finds one that was free) costs a second try on other ports, not the test."""
    try:
        return _start(tmp_path, redis, nats, extra)
    except PortTaken:
        return _start(tmp_path, redis, nats, extra)


class PortTaken(RuntimeError):
    pass


def _start(tmp_path: Path, redis: ServerProcess, nats: ServerProcess, extra: str) -> MapsApi:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    http, sock, tcp = free_port(), free_port(), free_port()
    (conf / "main.cf").write_text(
        f"postbus_nats_url = {nats.url}\n"
        f"postbus_redis_url = {redis.url}\n"
        f"postbus_maps_api_token = {TOKEN}\n"
        f"postbus_maps_api_socketmap_listen = 127.0.0.1:{sock}\n"
        f"postbus_maps_api_tcp_listen = 127.0.0.1:{tcp}\n"
        f"data_directory = {tmp_path}\n" + extra
    )
    (conf / "master.cf").write_text(f"127.0.0.1:{http} inet n - n - - maps-api\n")
    log = tmp_path / "maps-api.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "maps_api", "-c", str(conf), "-n", f"127.0.0.1:{http}",
             "--metrics", f"127.0.0.1:{free_port()}"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    api = MapsApi(f"http://127.0.0.1:{http}", sock, tcp, conf, log, proc)
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(api.url + "/healthz", timeout=1).status_code == 200:
                return api
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            error = PortTaken if "address already in use" in api.output().lower() else RuntimeError
            raise error(f"maps-api did not start:\n{api.output()}")
        time.sleep(0.05)


def stop_maps_api(api: MapsApi) -> None:
    api.proc.terminate()
    try:
        api.proc.wait(10)
    except subprocess.TimeoutExpired:
        api.proc.kill()
        api.proc.wait()


@pytest.fixture
def maps_api(tmp_path: Path, redis: ServerProcess, nats: ServerProcess) -> Iterator[MapsApi]:
    (tmp_path / "aliases").write_text("Postmaster root\nabuse@example.com security@example.com\n")
    api = start_maps_api(
        tmp_path, redis, nats,
        f"relay_recipient_maps = proxy:texthash:{tmp_path}/aliases\n"
        f"postbus_maps_api_tcp_maps = hash:{tmp_path}/virtual, texthash:{tmp_path}/aliases\n",
    )
    yield api
    stop_maps_api(api)
    assert "Traceback" not in api.output(), api.output()


@pytest.fixture
def postfix_conf(tmp_path: Path) -> Path:
    """A MAIL_CONFIG directory for the real postmap."""
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.6\n")
    return conf


def postmap_q(conf: Path, key: str, spec: str) -> subprocess.CompletedProcess[str]:
    assert POSTMAP is not None
    return subprocess.run(
        [POSTMAP, "-q", key, spec], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "MAIL_CONFIG": str(conf), "LANG": "C.UTF-8"},
        errors="surrogateescape",
    )
