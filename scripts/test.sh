#!/usr/bin/env bash
# One command from a fresh clone to the whole test suite: system packages, virtualenv, lint,
# type check, then unit, integration and end-to-end tests against a real Keycloak,
# PostgreSQL, nginx, Caddy, GDAL and Chromium. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
scripts/system-deps.sh
scripts/venv.sh test
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/apikm keycloak up
scripts/helm.sh >/dev/null  # a pinned helm for the chart tests (built once, cached)
scripts/gitleaks.sh >/dev/null  # a pinned gitleaks for the secret scanner rule tests (likewise)
.venv/bin/pytest "$@"
echo "test suite took $(( $(date +%s) - started ))s in all"
