#!/usr/bin/env bash
# Copies the generated CRDs into the Helm chart, so the chart installs exactly
# what config/crd/bases holds.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p charts/delauto/crds
rm -f charts/delauto/crds/*.yaml
cp config/crd/bases/*.yaml charts/delauto/crds/
