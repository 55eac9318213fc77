#!/usr/bin/env bash
# Copies what `make manifests` generates into the Helm chart, so the chart
# installs exactly the CRDs of config/crd/bases and the operator rules of
# config/rbac/role.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p charts/delauto/crds charts/delauto/files
rm -f charts/delauto/crds/*.yaml
cp config/crd/bases/*.yaml charts/delauto/crds/
{
  echo "# Generated from config/rbac/role.yaml by make manifests; do not edit."
  sed -n '/^rules:/,$p' config/rbac/role.yaml
} > charts/delauto/files/operator-rules.yaml
