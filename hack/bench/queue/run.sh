#!/usr/bin/env bash
# Queue benchmark: DelAuto's workers/queue vs asynq v0.26.0 vs BullMQ 5.x on
# one throwaway redis-server. Usage: hack/bench/queue/run.sh [queue-bench flags]
# (e.g. -runs 1 -parts drain). The last line printed is the summary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

command -v redis-server >/dev/null || { echo "redis-server is missing: run make redis" >&2; exit 1; }
command -v node >/dev/null || { echo "node (20+) is missing" >&2; exit 1; }

if [[ ! -d node_modules/bullmq ]]; then
	echo "installing BullMQ (npm ci) ..."
	npm ci --no-audit --no-fund --loglevel=error >&2
fi

work=$(mktemp -d)
redis_pid=""
cleanup() {
	if [[ -n $redis_pid ]]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

echo "building the benchmark ..."
go build -o "$work/queue-bench" .

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --loglevel warning >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
	redis-cli -p "$port" ping >/dev/null 2>&1 && break
	sleep 0.05
done
redis-cli -p "$port" ping >/dev/null || { echo "redis-server did not start:" >&2; cat "$work/redis.log" >&2; exit 1; }

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), $(go version | awk '{print $3}'), $(redis-server --version | awk '{print $3}'), node $(node --version), bullmq $(node -p 'require("bullmq/package.json").version'), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/queue-bench" -redis "127.0.0.1:$port" -bullmq "$here/bullmq.mjs" "$@"
