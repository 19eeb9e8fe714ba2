#!/usr/bin/env bash
# Runs `rhizon bench` against a `rhizon dev` node that this script starts on
# free loopback ports with a fresh data directory, then stops the node and
# removes the directory, whatever happens (trap). `make bench-dev` calls it;
# run-peers.sh adds the peers (etcd, JetStream KV) and the comparison.
#
# Environment (all optional):
#   BIN                rhizon binary                  (bin/rhizon)
#   BENCH_WORKLOADS    comma-separated workloads      (w1-command,wasm-counter,w1-occ; also hot, hot-occ, ingress, saga)
#   BENCH_WASM         the WASM counter wasm-counter deploys (bin/counter.wasm: make wasm-examples)
#   BENCH_CONCURRENCY  comma-separated concurrencies  (16,128)
#   BENCH_WARMUP       warm-up per run                (3s)
#   BENCH_DURATION     measuring window per run       (10s)
#   BENCH_ENTITIES     entities per workload          (rhizon bench's default: 10000, saga 64)
#   BENCH_NATS         "off": the node runs without NATS (no ingress, no saga)
#   BENCH_JSON         JSON Lines output; SVG plots are written next to it
#   BENCH_ARGS         more `rhizon bench` flags, e.g. "--rate 5000"
set -euo pipefail

BIN=${BIN:-bin/rhizon}
WORKLOADS=${BENCH_WORKLOADS:-w1-command,wasm-counter,w1-occ}
WASM=${BENCH_WASM:-bin/counter.wasm}
CONCURRENCY=${BENCH_CONCURRENCY:-16,128}
WARMUP=${BENCH_WARMUP:-3s}
DURATION=${BENCH_DURATION:-10s}
ENTITIES=${BENCH_ENTITIES:-}
JSON=${BENCH_JSON:-}

if [[ ! -x $BIN ]]; then
	echo "run-dev.sh: $BIN not found; run make build" >&2
	exit 1
fi

# shellcheck source=bench/rhizon-dev.sh
source "$(dirname "${BASH_SOURCE[0]}")/rhizon-dev.sh"
trap rhizon_dev_stop EXIT
trap 'exit 130' INT TERM

rhizon_dev_start "$BIN" "$(mktemp -d "${TMPDIR:-/tmp}/rhizon-bench.XXXXXX")"

args=(bench --target rhizon --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN" --workload "$WORKLOADS"
	--concurrency "$CONCURRENCY" --warmup "$WARMUP" --duration "$DURATION")
if [[ -n $ENTITIES ]]; then
	args+=(--entities "$ENTITIES")
fi
if [[ ,$WORKLOADS, == *,wasm-counter,* ]]; then
	if [[ ! -f $WASM ]]; then
		echo "run-dev.sh: $WASM not found; run make wasm-examples" >&2
		exit 1
	fi
	args+=(--wasm-module "$WASM")
fi
if [[ -n $RHIZON_BENCH_NATS ]]; then
	args+=(--nats "$RHIZON_BENCH_NATS") # for the ingress workload
fi
if [[ -n $JSON ]]; then
	args+=(--json "$JSON")
fi
# shellcheck disable=SC2206 # BENCH_ARGS is split into flags on purpose
args+=(${BENCH_ARGS:-})
"$BIN" "${args[@]}"
