"""The configurations we ship use only what Postbus honours: each is loaded, for
every service it runs, with the refusal of unsupported parameters on (as each
role's start does), and none turns the refusal into warnings.

Shipped: the sample configuration (etc/postbus, what `make run` starts; a
real start of it is tests/e2e/test_postbus_start.py), the compose files
(deploy/config, for each compose service's command line) and the Helm
chart's config values (for each role block's masterCfServices), plus the
ConfigMap the chart renders when helm is installed.

Each also ships a local user table (local_users, local_recipient_maps):
local delivery delivers only to resolved users, and containers have no
system users, so without it no local mail could be delivered. With no
Docker engine here, the check is what both roles do with the loaded
configuration, in process: smtpd's RCPT restrictions accept a listed user
and refuse an unknown one with Postfix's reply, and local(8)'s user lookup
resolves the one and not the other.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from delivery_local.users import LocalUser, find_user, open_user_tables
from ingress_smtpd.restrictions import CheckState, Policy
from postbus.config.loader import Config
from postbus.config.support import SWITCH
from postbus.maps.types.hashfile import parse_kv_source

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


def _write(tmp_path: Path, main_cf: str, master_cf: str, local_users: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "main.cf").write_text(main_cf)
    (tmp_path / "master.cf").write_text(master_cf)
    (tmp_path / "local_users").write_text(local_users)
    return tmp_path


def _local_users_resolve(conf: Path) -> None:
    """A user of the shipped table is accepted at RCPT and resolved by local delivery;
    an unknown name is refused and resolved by neither."""
    cfg = Config.load(conf)
    listed = parse_kv_source((conf / "local_users").read_text(), str(conf / "local_users"))
    # postmaster is accepted whatever the table says: take a user only the table knows
    user = next(name for name in listed if name != "postmaster")
    domain = cfg.get("mydomain")

    async def check() -> None:
        policy = Policy(cfg)

        async def rcpt(local: str) -> str | None:
            return await policy.check_rcpt(CheckState(
                "client.example", "192.0.2.1", "client.example", "someone@client.example",
                f"{local}@{domain}"))

        assert await rcpt(user) is None
        assert await rcpt("nosuchuser") == (
            f"550 5.1.1 <nosuchuser@{domain}>: Recipient address rejected: "
            "User unknown in local recipient table")
        tables = open_user_tables(cfg.get("local_recipient_maps"))
        assert await find_user(user, domain, tables) == LocalUser(user)  # not a passwd user
        assert await find_user("nosuchuser", domain, tables) is None

    asyncio.run(check())
    assert cfg.get("local_recipient_maps") == f"texthash:{conf}/local_users"


def _services(conf: Path) -> list[str]:
    cfg = Config.load(conf, check_support=False)
    return [f"{entry.service}/{entry.type}" for entry in cfg.master]


def test_sample_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTBUS_NATS_URL", raising=False)
    conf = ROOT / "etc" / "postbus"
    _load_each(conf, _services(conf), {})
    _local_users_resolve(conf)


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
    _local_users_resolve(conf)  # every role mounts ./config: test_deploy_files.py


def test_helm_values_configuration(tmp_path: Path) -> None:
    values = _yaml().safe_load((CHART / "values.yaml").read_text())
    config = values["config"]
    conf = _write(tmp_path, config["mainCf"], config["masterCf"], config["localUsers"])
    services = [s for block in ROLE_BLOCKS for s in values[block]["masterCfServices"]]
    _load_each(conf, services, {})
    _local_users_resolve(conf)
    # the ConfigMap (projected whole at /etc/postbus) holds the table under that name;
    # test_helm_rendered_configmap reads it back where helm is installed
    template = (CHART / "templates" / "configmap.yaml").read_text()
    assert "\n  local_users: |\n    {{- .Values.config.localUsers " in template


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
    conf = _write(tmp_path, data["main.cf"], data["master.cf"], data["local_users"])
    _load_each(conf, _services(conf), {})
    _local_users_resolve(conf)
