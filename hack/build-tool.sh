#!/usr/bin/env bash
# build-tool.sh DIR DESCRIPTION PACKAGE...
# Builds the given packages of the wrapper module in DIR into bin/, from the
# Go module proxy only. Prints what it builds and how long it took.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$1 desc=$2
shift 2
mkdir -p "$root/bin"
start=$(date +%s)
echo ">> building $desc (a cold build takes minutes; the Go build cache makes it seconds)" >&2
cd "$root/$dir"
GOFLAGS=-mod=mod GOWORK=off go build -trimpath -o "$root/bin/" "$@"
echo ">> built $desc in $(( $(date +%s) - start ))s" >&2
