#!/usr/bin/env bash
# install-tool.sh TARGET PACKAGE VERSION
# Builds PACKAGE@VERSION from the Go module proxy into the file TARGET.
set -euo pipefail
target=$1 pkg=$2 version=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo ">> building $pkg@$version" >&2
GOBIN=$tmp GOWORK=off go install -trimpath "$pkg@$version"
mv "$tmp/$(basename "$pkg")" "$target"
echo ">> built $(basename "$target") in $(( $(date +%s) - start ))s" >&2
