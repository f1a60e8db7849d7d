#!/usr/bin/env bash
# Renders deploy/kubernetes/apikm.yaml (plain manifests, for kubectl without Helm) from the
# chart and the example values: scripts/render-manifest.sh > deploy/kubernetes/apikm.yaml
# tests/integration/deploy/test_helm.py fails when the checked-in file differs.
set -euo pipefail
cd "$(dirname "$0")/.."
helm=$(scripts/helm.sh)
cat <<'HEADER'
# apikm on Kubernetes without Helm: two replicas on an external PostgreSQL, migrations as an
# init container, every secret in one Secret. GENERATED from the Helm chart, do not edit:
#   scripts/render-manifest.sh > deploy/kubernetes/apikm.yaml
# which runs
#   helm template apikm deploy/helm/apikm --namespace apikm -f deploy/helm/examples/minimal.yaml
# To use it, replace every "change-me" and example.org (better: render your own values with
# the same command, or `helm install`), then
#   kubectl create namespace apikm && kubectl -n apikm apply -f deploy/kubernetes/apikm.yaml
HEADER
"$helm" template apikm deploy/helm/apikm --namespace apikm -f deploy/helm/examples/minimal.yaml
