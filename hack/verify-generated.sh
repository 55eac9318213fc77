#!/usr/bin/env bash
# Fails when `make manifests generate` changed a committed file or produced an
# untracked one: the generated CRDs, RBAC, chart CRD templates and deepcopy code must be
# committed current.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(api config charts/delauto/crds charts/delauto/files "charts/delauto/templates/crd-*.yaml")
changed=$(git status --porcelain -- "${paths[@]}")
if [[ -n $changed ]]; then
  echo "generated files are stale or uncommitted; run 'make manifests generate' and commit:" >&2
  echo "$changed" >&2
  git --no-pager diff --stat -- "${paths[@]}" >&2 || true
  exit 1
fi
echo ">> generated files are current" >&2
