#!/usr/bin/env bash
# The README's "Using a key", word for word after this header: tests/e2e/test_readme_key.py
# runs it against real Keycloak, apikm, nginx and GDAL, and checks the README quotes it.
# Run it (bash scripts/using-a-key.sh) or paste the commands below into your shell.
set -euo pipefail

APIKM=${APIKM:-http://127.0.0.1:8000}          # apikm (scripts/dev.sh)
KEYCLOAK=${KEYCLOAK:-http://127.0.0.1:8080}    # Keycloak with the demo realm
GATEWAY=${GATEWAY:-http://127.0.0.1:8088}      # nginx with deploy/nginx/apikm.conf

# 1. A Keycloak access token for alice (the demo realm's public apikm-cli client allows
#    the password grant; otherwise use the web UI).
TOKEN=$(curl -sSf "$KEYCLOAK/realms/demo/protocol/openid-connect/token" \
  -d grant_type=password -d client_id=apikm-cli -d username=alice -d password=alice \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

# 2. A key with the roles deploy/nginx/apikm.conf requires: "analyst" for /data/,
#    "geoserver:read" for /maps/. The answer holds the key itself, shown this once.
CREATED=$(curl -sSf "$APIKM/v1/keys" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"name": "gdal on my laptop", "roles": ["analyst", "geoserver:read"],
       "allowed_networks": ["127.0.0.0/8"], "meta": {"project": "ndvi"}}')
echo "$CREATED"
# → {"id": "...", "key": "apikm_...", "hint": "apikm_AbCd1234...", ...}
APIKM_API_KEY=$(echo "$CREATED" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export APIKM_API_KEY    # apikm.client.APIKeyAuth() reads it too

# 3. Ask apikm whether the key may do something (what a service does):
curl -sSf "$APIKM/v1/verify" -H 'Content-Type: application/json' \
  -d "{\"key\": \"$APIKM_API_KEY\", \"required_roles\": [\"analyst\"], \"client_ip\": \"127.0.0.1\"}"
echo
# → {"valid": true, "code": "VALID", "user": {"username": "alice", ...}, "roles": [...], ...}

# 4. Read a GeoTIFF through the gateway. GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR stops GDAL
#    from listing the directory first (dozens of requests, each one a use of the key).
GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR \
  gdalinfo "/vsicurl/$GATEWAY/data/dem.tif?apikey=$APIKM_API_KEY"
