#!/usr/bin/env bash
# Fails when a fuzz target of the tree is not run by `make fuzz` (and so by
# `make test`): every `func FuzzX` of package ./P must stand on a line of the
# Makefile together with ./P (a `go test ./P ... -fuzz '^FuzzX$$'` line or a
# ./P:FuzzX entry of PARSER_FUZZ_TARGETS).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
while read -r file name; do
  pkg="./$(dirname "$file")"
  grep -Eq "${pkg}[ :].*\\b${name}\\b" Makefile || missing+=("${pkg}:${name}")
done < <(git grep --untracked -lE -e '^func Fuzz[A-Za-z0-9_]*\(' -- '*_test.go' |
  while read -r f; do sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$f" | sed "s|^|$f |"; done)
if ((${#missing[@]})); then
  echo "fuzz targets that make fuzz does not run (add them to PARSER_FUZZ_TARGETS in the Makefile):"
  printf '  %s\n' "${missing[@]}"
  exit 1
fi
