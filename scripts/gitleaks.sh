#!/usr/bin/env bash
# Prints the path of a pinned gitleaks, building it once when missing: `go install` through
# the Go module proxy (checked against Go's checksum database) into ~/.cache/apikm/bin, or
# $APIKM_CACHE_DIR/bin. Without Go, a gitleaks on PATH is used. The secret-scanning rule
# tests (tests/integration/deploy/test_secret_scanning.py) use it to run
# deploy/secret-scanning/gitleaks.toml against generated keys.
set -euo pipefail
version=v8.30.1
bin="${APIKM_CACHE_DIR:-$HOME/.cache/apikm}/bin"
gitleaks="$bin/gitleaks"
if [ -x "$gitleaks" ] && "$gitleaks" version 2>/dev/null | grep -qx "${version#v}"; then
  echo "$gitleaks"
  exit 0
fi
if ! command -v go >/dev/null; then
  command -v gitleaks && exit 0
  echo "scripts/gitleaks.sh: needs Go (to build gitleaks $version) or gitleaks on PATH" >&2
  exit 1
fi
mkdir -p "$bin"
started=$(date +%s)
echo "building gitleaks $version with $(go version | cut -d' ' -f3) (a few minutes, once)..." >&2
GOBIN="$bin" CGO_ENABLED=0 GOFLAGS=-mod=mod go install -trimpath \
  -ldflags "-s -w -X github.com/zricethezav/gitleaks/v8/version.Version=${version#v}" \
  "github.com/zricethezav/gitleaks/v8@$version" >&2
echo "gitleaks $version built in $(( $(date +%s) - started ))s" >&2
echo "$gitleaks"
