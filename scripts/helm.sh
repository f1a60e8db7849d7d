#!/usr/bin/env bash
# Prints the path of a pinned helm, building it once when missing: `go install` through the
# Go module proxy (checked against Go's checksum database) into ~/.cache/apikm/bin, or
# $APIKM_CACHE_DIR/bin. Without Go, a helm on PATH is used. The chart tests
# (tests/integration/deploy/test_helm.py) and scripts/render-manifest.sh use it.
# The build takes about two minutes on two cores; later runs reuse the binary. helm v3.22
# needs Go 1.26 (its go.mod); Go 1.21-1.25 fetch that toolchain through the proxy themselves.
set -euo pipefail
version=v3.22.0
bin="${APIKM_CACHE_DIR:-$HOME/.cache/apikm}/bin"
helm="$bin/helm"
if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
  echo "$helm"
  exit 0
fi
if ! command -v go >/dev/null; then
  # No Go: fall back to a helm on PATH, if any.
  command -v helm && exit 0
  echo "scripts/helm.sh: needs Go (to build helm $version) or helm on PATH" >&2
  exit 1
fi
mkdir -p "$bin"
started=$(date +%s)
echo "building helm $version with $(go version | cut -d' ' -f3) (a few minutes, once)..." >&2
GOBIN="$bin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
  "helm.sh/helm/v3/cmd/helm@$version" >&2
echo "helm $version built in $(( $(date +%s) - started ))s" >&2
echo "$helm"
