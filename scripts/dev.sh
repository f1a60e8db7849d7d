#!/usr/bin/env bash
# One command from a fresh clone to a running apikm: SQLite, local Keycloak with the demo realm.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
scripts/venv.sh
.venv/bin/apikm keycloak up
# nginx with deploy/nginx/apikm.conf on 127.0.0.1:8088 and a sample GeoTIFF (var/demo/), in
# front of the apikm started below: the README's scripts/using-a-key.sh works as written.
.venv/bin/apikm demo gateway
# Dev-only defaults for the demo realm; a .env file or the environment overrides them.
export APIKM_OIDC_CLIENT_SECRET=${APIKM_OIDC_CLIENT_SECRET:-apikm-demo-secret}
echo "apikm: http://127.0.0.1:${APIKM_PORT:-8000}/  (API docs at /docs)"
exec .venv/bin/apikm serve
