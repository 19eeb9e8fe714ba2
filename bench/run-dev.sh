#!/usr/bin/env bash
# Runs `rhizon bench` against a `rhizon dev` node that this script starts on
# free loopback ports with a fresh data directory, then stops the node and
# removes the directory, whatever happens (trap). `make bench` calls it after
# the Go benchmarks; it is the single-replica figure of issue 4 until the
# bench suite starts a 3-node cluster itself.
#
# Environment (all optional):
#   BIN                rhizon binary                  (bin/rhizon)
#   BENCH_WORKLOADS    comma-separated workloads      (w1-command,w1-occ)
#   BENCH_CONCURRENCY  comma-separated concurrencies  (16,128)
#   BENCH_WARMUP       warm-up per run                (3s)
#   BENCH_DURATION     measuring window per run       (10s)
#   BENCH_ENTITIES     entities per workload          (10000)
#   BENCH_JSON         JSON Lines output; SVG plots are written next to it
#   BENCH_ARGS         more `rhizon bench` flags, e.g. "--rate 5000"
set -euo pipefail

BIN=${BIN:-bin/rhizon}
WORKLOADS=${BENCH_WORKLOADS:-w1-command,w1-occ}
CONCURRENCY=${BENCH_CONCURRENCY:-16,128}
WARMUP=${BENCH_WARMUP:-3s}
DURATION=${BENCH_DURATION:-10s}
ENTITIES=${BENCH_ENTITIES:-10000}
JSON=${BENCH_JSON:-}

if [[ ! -x $BIN ]]; then
	echo "run-dev.sh: $BIN not found; run make build" >&2
	exit 1
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/rhizon-bench.XXXXXX")
pid=""
cleanup() {
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		# The node drains gRPC and closes its stores; give it 15 s.
		for _ in $(seq 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Port 0 everywhere: the node binds free ports and prints the ones it got.
"$BIN" dev --data-dir "$dir/data" --token-file "$dir/dev-token.json" \
	--grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --raft-addr 127.0.0.1:0 \
	--gossip-addr 127.0.0.1:0 --nats-addr off --log-level warn >"$dir/dev.log" 2>&1 &
pid=$!

# The banner's last line we need: "export RHIZON_ADDR=host:port RHIZON_TOKEN=...".
line=""
for _ in $(seq 600); do # 60 s
	line=$(grep -m1 'export RHIZON_ADDR=' "$dir/dev.log" || true)
	[[ -n $line ]] && break
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "run-dev.sh: rhizon dev exited before it was ready:" >&2
		cat "$dir/dev.log" >&2
		exit 1
	fi
	sleep 0.1
done
if [[ -z $line ]]; then
	echo "run-dev.sh: rhizon dev not ready after 60 s:" >&2
	cat "$dir/dev.log" >&2
	exit 1
fi
addr=$(sed -n 's/.*RHIZON_ADDR=\([^ ]*\).*/\1/p' <<<"$line")
token=$(sed -n 's/.*RHIZON_TOKEN=\([^ ]*\).*/\1/p' <<<"$line")
echo "rhizon dev ready at $addr (data in $dir)" >&2

args=(bench --target rhizon --addr "$addr" --token "$token" --workload "$WORKLOADS"
	--concurrency "$CONCURRENCY" --warmup "$WARMUP" --duration "$DURATION" --entities "$ENTITIES")
if [[ -n $JSON ]]; then
	args+=(--json "$JSON")
fi
# shellcheck disable=SC2206 # BENCH_ARGS is split into flags on purpose
args+=(${BENCH_ARGS:-})
"$BIN" "${args[@]}"
