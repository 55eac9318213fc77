#!/usr/bin/env bash
# Installs Debian's redis-server (and redis-cli) when they are missing.
# The tests start their own throwaway servers; the system service is not used.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "redis-server is missing; install Debian's package: sudo apt-get install -y redis-server" >&2
  exit 1
fi
echo "installing redis-server from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system instance; the project never uses it.
(systemctl disable --now redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true) >/dev/null 2>&1
command -v redis-server >/dev/null
