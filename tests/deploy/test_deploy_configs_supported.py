"""The configurations we ship use only what Postbus honours: each is loaded, for
every service it runs, with the refusal of unsupported parameters on (as each
role's start does), and none turns the refusal into warnings.

Shipped: the sample configuration (etc/postbus, what `make run` starts; a
real start of it is tests/e2e/test_postbus_start.py), the compose files
(deploy/config, for each compose service's command line) and the Helm
chart's config values (for each role block's masterCfServices), plus the
ConfigMap the chart renders when helm is installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from postbus.config.loader import Config
from postbus.config.support import SWITCH

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "postbus"
ROLE_BLOCKS = ("ingressSmtpd", "qmgr", "deliverySmtp", "deliveryLocal", "policy",
               "contentFilter", "mapsApi", "webhooks")


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML not installed (reads the deploy files)")


def _load_each(conf: Path, services: list[str], overrides: dict[str, dict[str, str]]) -> None:
    main = Config.load(conf)  # what postbus start checks: main.cf and every -o
    assert main.get(SWITCH) == "refuse"
    assert main.unsupported == []
    for service in services:
        cfg = Config.load(conf, service=service, overrides=overrides.get(service))
        assert cfg.unsupported == [], service


def _write(tmp_path: Path, main_cf: str, master_cf: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "main.cf").write_text(main_cf)
    (tmp_path / "master.cf").write_text(master_cf)
    return tmp_path


def _services(conf: Path) -> list[str]:
    cfg = Config.load(conf, check_support=False)
    return [f"{entry.service}/{entry.type}" for entry in cfg.master]


def test_sample_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTBUS_NATS_URL", raising=False)
    conf = ROOT / "etc" / "postbus"
    _load_each(conf, _services(conf), {})


def test_compose_configuration() -> None:
    compose = _yaml().safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    conf = ROOT / "deploy" / "config"
    services: list[str] = []
    overrides: dict[str, dict[str, str]] = {}
    for name, spec in compose["services"].items():
        argv = [str(a) for a in spec.get("command") or []]
        if argv[:2] != ["python", "-m"]:
            continue
        assert argv[argv.index("-c") + 1] == "/etc/postbus", name
        service = argv[argv.index("-n") + 1]
        services.append(service)
        pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"]
        overrides[service] = dict(p.split("=", 1) for p in pairs)
    assert len(services) >= 9
    _load_each(conf, services, overrides)


def test_helm_values_configuration(tmp_path: Path) -> None:
    values = _yaml().safe_load((CHART / "values.yaml").read_text())
    conf = _write(tmp_path, values["config"]["mainCf"], values["config"]["masterCf"])
    services = [s for block in ROLE_BLOCKS for s in values[block]["masterCfServices"]]
    _load_each(conf, services, {})


def _helm() -> str | None:
    cache = Path(os.environ.get("POSTBUS_CACHE", ROOT / ".cache"))
    for candidate in (os.environ.get("POSTBUS_HELM"), cache / "helm" / "helm" / "helm"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("helm")


def test_helm_rendered_configmap(tmp_path: Path) -> None:
    helm = _helm()
    if helm is None:
        pytest.skip("helm not found: install it with deploy/tools/install-validators.sh")
    import subprocess

    rendered = subprocess.run(
        [helm, "template", "postbus-test", str(CHART), "--show-only", "templates/configmap.yaml"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    data = _yaml().safe_load(rendered)["data"]
    conf = _write(tmp_path, data["main.cf"], data["master.cf"])
    _load_each(conf, _services(conf), {})
