#!/usr/bin/env bash
# Runs every workload against Rhizon and then against each peer (etcd,
# JetStream KV with default fsync, JetStream KV with sync always, and the
# last with direct gets off, for w1-occ only), one
# system at a time so that none of them shares the machine with another,
# and prints one table of all runs, the comparison with Rhizon's ratio
# to each peer, and whether the benchmark issue's goals are met. Rhizon
# also runs w1-command open loop at half the rate it reached closed loop at
# the highest concurrency (the latency goal's load). `make bench` calls it.
#
# Rhizon is a throw-away 3-node cluster of `rhizon node` processes on free
# loopback ports, with clustered embedded NATS (rhizon-cluster.sh), started
# before its runs and stopped and removed after them; BENCH_RHIZON=dev
# uses one `rhizon dev` node instead (rhizon-dev.sh). `rhizon bench` gets
# every node's gRPC address (used round-robin) and NATS URL (for ingress).
# `rhizon bench` starts each peer itself: three servers, each in a
# `rhizon bench-peer` child process of its own (as Rhizon's nodes are), on
# free loopback ports with fresh data directories, stopped and removed
# after its runs. ingress, saga and
# wasm-counter (the example counter as a WebAssembly actor, deployed to
# Rhizon at setup) do not apply to the peers: their rows say "skipped".
#
# Environment (all optional):
#   BIN                rhizon binary                  (bin/rhizon)
#   BENCH_RHIZON       cluster (3 nodes) or dev       (cluster)
#   BENCH_TARGETS      rhizon and peers, in order     (rhizon,etcd,jetstream-kv,jetstream-kv-sync,jetstream-kv-sync-nodirect)
#   BENCH_WORKLOADS    comma-separated workloads      (w1-occ,w1-command,wasm-counter,hot,ingress,saga)
#   BENCH_WASM         the WASM counter wasm-counter deploys (bin/counter.wasm: make wasm-examples)
#   BENCH_CONCURRENCY  comma-separated concurrencies  (16,128)
#   BENCH_WARMUP       warm-up per run                (3s)
#   BENCH_DURATION     measuring window per run       (10s)
#   BENCH_ENTITIES     entities per workload          (rhizon bench's default: 10000, saga 64)
#   BENCH_OUT          directory for <target>.json, all.json and the plots (bin/bench/peers)
#   BENCH_ARGS         more `rhizon bench` flags for every target
#   BENCH_OPEN         "off" skips the open-loop run   (on)
#   BENCH_ROUNDS       rounds of all the targets, in turn; the goals take each
#                      load's median over the rounds   (1)
#   BENCH_SHARDS, BENCH_NATS, BENCH_NODE_ARGS: see rhizon-cluster.sh
set -euo pipefail

BIN=${BIN:-bin/rhizon}
RHIZON_KIND=${BENCH_RHIZON:-cluster}
TARGETS=${BENCH_TARGETS:-rhizon,etcd,jetstream-kv,jetstream-kv-sync,jetstream-kv-sync-nodirect}
WORKLOADS=${BENCH_WORKLOADS:-w1-occ,w1-command,wasm-counter,hot,ingress,saga}
WASM=${BENCH_WASM:-bin/counter.wasm}
CONCURRENCY=${BENCH_CONCURRENCY:-16,128}
WARMUP=${BENCH_WARMUP:-3s}
DURATION=${BENCH_DURATION:-10s}
ENTITIES=${BENCH_ENTITIES:-}
OUT=${BENCH_OUT:-bin/bench/peers}
ROUNDS=${BENCH_ROUNDS:-1}
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
	echo "run-peers.sh: BENCH_ROUNDS=$ROUNDS: want a positive number" >&2
	exit 2
fi

if [[ ! -x $BIN ]]; then
	echo "run-peers.sh: $BIN not found; run make build" >&2
	exit 1
fi
if [[ ,$WORKLOADS, == *,wasm-counter,* && ! -f $WASM ]]; then
	echo "run-peers.sh: $WASM not found; run make wasm-examples" >&2
	exit 1
fi

# shellcheck source=bench/rhizon-dev.sh
source "$(dirname "${BASH_SOURCE[0]}")/rhizon-dev.sh"
# shellcheck source=bench/rhizon-cluster.sh
source "$(dirname "${BASH_SOURCE[0]}")/rhizon-cluster.sh"

# start_rhizon starts the Rhizon under test and sets RHIZON_BENCH_ADDR,
# RHIZON_BENCH_TOKEN and RHIZON_BENCH_NATS; stop_rhizon stops it and removes
# its data (safe to call when nothing was started).
case $RHIZON_KIND in
cluster)
	start_rhizon() {
		rhizon_cluster_start "$BIN" "$(mktemp -d "${TMPDIR:-/tmp}/rhizon-bench.XXXXXX")"
	}
	stop_rhizon() {
		rhizon_cluster_stop
	}
	;;
dev)
	start_rhizon() {
		rhizon_dev_start "$BIN" "$(mktemp -d "${TMPDIR:-/tmp}/rhizon-bench.XXXXXX")"
	}
	stop_rhizon() {
		rhizon_dev_stop
	}
	;;
*)
	echo "run-peers.sh: BENCH_RHIZON=$RHIZON_KIND: want cluster or dev" >&2
	exit 2
	;;
esac

trap stop_rhizon EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.svg
common=(--workload "$WORKLOADS" --concurrency "$CONCURRENCY" --warmup "$WARMUP" --duration "$DURATION")
if [[ -n $ENTITIES ]]; then
	common+=(--entities "$ENTITIES")
fi
# shellcheck disable=SC2206 # BENCH_ARGS is split into flags on purpose
common+=(${BENCH_ARGS:-})

# open_loop JSON runs w1-command open loop at half the closed-loop
# throughput that JSON records for it at the highest concurrency, against
# the Rhizon still running.
open_loop() {
	local json=$1 top half ojson="$OUT/rhizon-open$2.json"
	[[ ${BENCH_OPEN:-on} == off || $RHIZON_KIND != cluster ]] && return 0
	top=$(tr ',' '\n' <<<"$CONCURRENCY" | sort -n | tail -1)
	half=$(grep '"workload":"w1-command"' "$json" 2>/dev/null | grep '"mode":"closed"' | grep "\"concurrency\":$top," |
		grep -o '"throughput":[0-9.]*' | tail -1 | cut -d: -f2 | awk '{ printf "%d", $1 / 2 }' || true)
	if [[ -z $half || $half -lt 1 ]]; then
		return 0
	fi
	echo "== rhizon open loop: w1-command at $half/s, half the closed-loop C=$top throughput" >&2
	local args=(bench --target rhizon --json "$ojson" --workload w1-command --rate "$half" --concurrency 512
		--warmup "$WARMUP" --duration "$DURATION" --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN")
	# shellcheck disable=SC2206 # BENCH_ARGS is split into flags on purpose
	args+=(${BENCH_ARGS:-})
	if "$BIN" "${args[@]}"; then
		files+=("$ojson")
	else
		failed+=(rhizon-open-loop)
		[[ -s $ojson ]] && files+=("$ojson")
	fi
	return 0
}

echo "machine: $(nproc) cores; rhizon: $RHIZON_KIND; load before: $(uptime)" >&2
files=()
failed=()
IFS=, read -ra targets <<<"$TARGETS"
for ((round = 1; round <= ROUNDS; round++)); do
	for target in "${targets[@]}"; do
		# Round 1's files keep their names; later rounds' get .rN.
		suffix=""
		((round > 1)) && suffix=".r$round"
		json="$OUT/$target$suffix.json"
		args=(bench --target "$target" --json "$json" "${common[@]}")
		if [[ $target == rhizon ]]; then
			start_rhizon
			args+=(--addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN")
			if [[ ,$WORKLOADS, == *,wasm-counter,* ]]; then
				args+=(--wasm-module "$WASM")
			fi
			if [[ -n $RHIZON_BENCH_NATS ]]; then
				args+=(--nats "$RHIZON_BENCH_NATS")
			fi
		fi
		echo "== $target${suffix:+ (round $round of $ROUNDS)} (load average: $(uptime | sed 's/.*load average: //'))" >&2
		# One failed target does not hide the others' figures.
		if "$BIN" "${args[@]}"; then
			files+=("$json")
		else
			failed+=("$target")
			[[ -s $json ]] && files+=("$json")
		fi
		if [[ $target == rhizon ]]; then
			open_loop "$json" "$suffix"
			stop_rhizon
		fi
	done
done
echo "load after: $(uptime)" >&2

if ((${#files[@]} > 0)); then
	cat "${files[@]}" >"$OUT/all.json"
	echo
	echo "== all runs (JSON Lines in $OUT/all.json)"
	"$BIN" bench --goals "$RHIZON_KIND" --compare "$(
		IFS=,
		echo "${files[*]}"
	)"
fi
if ((${#failed[@]} > 0)); then
	echo "run-peers.sh: failed: ${failed[*]}" >&2
	exit 1
fi
