"""No role runs as root in containers: the image's USER, compose's user:, the chart's
securityContext (as `postbus start` runs them as mail_owner on a host)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_dockerfile_user_is_not_root() -> None:
    users = re.findall(r"^USER\s+(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert users and users[-1] == "10025:10025"


def test_compose_runs_every_postbus_role_as_the_image_user() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    roles = {name: svc for name, svc in compose["services"].items()
             if "python" in (svc.get("command") or [])}
    assert len(roles) >= 9
    for name, service in roles.items():
        assert service.get("user") == "10025:10025", name


def test_chart_pods_run_as_non_root() -> None:
    values = yaml.safe_load((DEPLOY / "helm/postbus/values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10025 != 0
    assert values["containerSecurityContext"]["allowPrivilegeEscalation"] is False
    template = (DEPLOY / "helm/postbus/templates/deployments.yaml").read_text()
    assert "$.Values.podSecurityContext" in template
    assert "$.Values.containerSecurityContext" in template
