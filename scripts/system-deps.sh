#!/usr/bin/env bash
# Debian packages apikm's tests (and the dev stack's download) need. Installs only what is
# missing, so a machine that has everything does not touch apt at all.
set -euo pipefail

packages=(
  maven            # fetches the pinned Keycloak distribution
  postgresql       # real PostgreSQL for the integration tests
  nginx caddy      # gateways in front of apikm (forward auth)
  gdal-bin         # gdalinfo through a gateway, as GIS users do
  chromium         # the web UI tests (Playwright drives Debian's Chromium)
  redis-server     # shared limits and invalidation across replicas (tests start their own)
  wrk              # the benchmarks under bench/ (run on demand)
  curl
)

missing=()
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
# Tests start their own nginx/PostgreSQL on free loopback ports: stop the distribution's
# services so they hold no ports and no CPU.
for service in nginx postgresql caddy redis-server; do
  $sudo service "$service" stop >/dev/null 2>&1 || true
done
