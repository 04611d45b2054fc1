"""Durable by default wherever Postbus runs: compose's nats-server fsyncs every
write; the chart runs a three-node JetStream cluster with R3 streams (or one
node that fsyncs every write); every NATS is 2.12 or later. The NATS
configurations are checked by nats-server itself (``-t``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from postbus.servers import find_binary
from tests.deploy.test_deploy_files import COMPOSE, DEPLOY, _documents, _helm_template, _yaml

MIN_NATS = (2, 12)


def nats_version(image: str) -> tuple[int, int]:
    """``nats:2.15-alpine`` -> (2, 15); a compose default ``${VAR:-image}`` is read."""
    image = re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", image)
    match = re.fullmatch(r"(?:[\w./-]+/)?nats:(\d+)\.(\d+)(?:\.\d+)?(?:-[\w.]+)?", image)
    assert match, f"not a versioned nats image: {image}"
    return int(match.group(1)), int(match.group(2))


def nats_accepts(conf: str, tmp_path: Path, **env: str) -> None:
    """nats-server -t: the configuration parses, as the server would read it."""
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    proc = subprocess.run([find_binary("nats-server"), "-t", "-c", str(path)],
                          capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_nats_version_reader() -> None:
    assert nats_version("${POSTBUS_NATS_IMAGE:-nats:2.15-alpine}") == (2, 15)
    assert nats_version("docker.io/library/nats:2.12.8") == (2, 12)
    with pytest.raises(AssertionError):
        nats_version("nats:latest")


def test_compose_nats_fsyncs_every_write(tmp_path: Path) -> None:
    nats = _yaml().safe_load(COMPOSE.read_text())["services"]["nats"]
    assert nats_version(nats["image"]) >= MIN_NATS
    assert nats["command"] == ["-c", "/etc/nats/postbus.conf"]
    assert "./nats/nats-server.conf:/etc/nats/postbus.conf:ro" in nats["volumes"]
    conf = (DEPLOY / "nats" / "nats-server.conf").read_text()
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)
    assert re.search(r"^\s*store_dir:\s*/data\s*$", conf, re.M)
    assert "nats-data:/data" in nats["volumes"]
    nats_accepts(conf, tmp_path)


def _rendered(*args: str) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in _documents(_helm_template(*args)):
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def _main_cf(docs: dict[str, list[dict[str, Any]]]) -> str:
    (config,) = [c for c in docs["ConfigMap"] if c["metadata"]["name"].endswith("-config")
                 and "main.cf" in c["data"]]
    text: str = config["data"]["main.cf"]
    return text


def _nats_urls(docs: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {env["value"] for d in docs["Deployment"]
            for env in d["spec"]["template"]["spec"]["containers"][0]["env"]
            if env["name"] == "POSTBUS_NATS_URL"}


def test_chart_runs_a_three_node_cluster_with_r3_streams(tmp_path: Path) -> None:
    docs = _rendered()
    (nats,) = docs["StatefulSet"]
    assert nats["spec"]["replicas"] == 3
    (container,) = nats["spec"]["template"]["spec"]["containers"]
    assert nats_version(container["image"]) >= MIN_NATS
    (conf_map,) = [c for c in docs["ConfigMap"] if "nats.conf" in c["data"]]
    conf = conf_map["data"]["nats.conf"]
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)
    name = nats["metadata"]["name"]
    routes = re.findall(rf"nats://({name}-\d)\.{name}-headless:6222", conf)
    assert routes == [f"{name}-0", f"{name}-1", f"{name}-2"]
    nats_accepts(conf, tmp_path, POD_NAME=f"{name}-0")
    assert re.search(r"^postbus_stream_replicas = 3$", _main_cf(docs), re.M)
    assert _nats_urls(docs) == {f"nats://{name}:4222"}
    (budget,) = docs["PodDisruptionBudget"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert {s["metadata"]["name"] for s in docs["Service"]} >= {name, f"{name}-headless"}


def test_chart_single_node_mode_fsyncs_and_keeps_one_replica(tmp_path: Path) -> None:
    docs = _rendered("--set", "nats.replicas=1")
    (nats,) = docs["StatefulSet"]
    assert nats["spec"]["replicas"] == 1
    (conf_map,) = [c for c in docs["ConfigMap"] if "nats.conf" in c["data"]]
    conf = conf_map["data"]["nats.conf"]
    assert "cluster {" not in conf and re.search(r"sync_interval:\s*always", conf)
    nats_accepts(conf, tmp_path, POD_NAME="n0")
    assert re.search(r"^postbus_stream_replicas = 1$", _main_cf(docs), re.M)
    assert "PodDisruptionBudget" not in docs


def test_chart_with_an_external_nats(tmp_path: Path) -> None:
    docs = _rendered("--set", "nats.enabled=false",
                     "--set", "externalNats.url=nats://nats.example:4222",
                     "--set", "externalNats.streamReplicas=3")
    assert "StatefulSet" not in docs
    assert _nats_urls(docs) == {"nats://nats.example:4222"}
    assert re.search(r"^postbus_stream_replicas = 3$", _main_cf(docs), re.M)


def test_chart_refuses_an_even_number_of_nats_nodes() -> None:
    from tests.deploy.test_deploy_files import CHART, _helm, _need, _run

    helm = _need(_helm(), "helm")
    proc = _run([helm, "lint", "--strict", str(CHART), "--set", "nats.replicas=2"])
    assert proc.returncode != 0 and "replicas" in proc.stdout + proc.stderr
