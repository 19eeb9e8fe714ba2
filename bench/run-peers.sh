#!/usr/bin/env bash
# Runs every workload against Rhizon and then against each peer (etcd,
# JetStream KV with default fsync, JetStream KV with sync always), one
# system at a time so that none of them shares the machine with another,
# and prints one table of all runs and the comparison with Rhizon's ratio
# to each peer. `make bench` calls it.
#
# Rhizon is a `rhizon dev` node for now (start_rhizon below: replace its
# body by a 3-node cluster start once there is one; it must set
# RHIZON_BENCH_ADDR, comma-separated addresses, and RHIZON_BENCH_TOKEN).
# `rhizon bench` starts each peer itself: three servers in a
# `rhizon bench-peer` child process, on free loopback ports with a fresh
# data directory, stopped and removed after its runs.
#
# Environment (all optional):
#   BIN                rhizon binary                  (bin/rhizon)
#   BENCH_TARGETS      rhizon and peers, in order     (rhizon,etcd,jetstream-kv,jetstream-kv-sync)
#   BENCH_WORKLOADS    comma-separated workloads      (w1-occ,w1-command,hot)
#   BENCH_CONCURRENCY  comma-separated concurrencies  (16,128)
#   BENCH_WARMUP       warm-up per run                (3s)
#   BENCH_DURATION     measuring window per run       (10s)
#   BENCH_ENTITIES     entities per workload          (10000)
#   BENCH_OUT          directory for <target>.json, all.json and the plots (bin/bench/peers)
#   BENCH_ARGS         more `rhizon bench` flags for every target
set -euo pipefail

BIN=${BIN:-bin/rhizon}
TARGETS=${BENCH_TARGETS:-rhizon,etcd,jetstream-kv,jetstream-kv-sync}
WORKLOADS=${BENCH_WORKLOADS:-w1-occ,w1-command,hot}
CONCURRENCY=${BENCH_CONCURRENCY:-16,128}
WARMUP=${BENCH_WARMUP:-3s}
DURATION=${BENCH_DURATION:-10s}
ENTITIES=${BENCH_ENTITIES:-10000}
OUT=${BENCH_OUT:-bin/bench/peers}

if [[ ! -x $BIN ]]; then
	echo "run-peers.sh: $BIN not found; run make build" >&2
	exit 1
fi

# shellcheck source=bench/rhizon-dev.sh
source "$(dirname "${BASH_SOURCE[0]}")/rhizon-dev.sh"

# start_rhizon starts the Rhizon under test and sets RHIZON_BENCH_ADDR and
# RHIZON_BENCH_TOKEN; stop_rhizon stops it and removes its data (it must be
# safe to call when nothing was started). The 3-node cluster goes here.
start_rhizon() {
	rhizon_dev_start "$BIN" "$(mktemp -d "${TMPDIR:-/tmp}/rhizon-bench.XXXXXX")"
}
stop_rhizon() {
	rhizon_dev_stop
}

trap stop_rhizon EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.svg
common=(--workload "$WORKLOADS" --concurrency "$CONCURRENCY" --warmup "$WARMUP"
	--duration "$DURATION" --entities "$ENTITIES")
# shellcheck disable=SC2206 # BENCH_ARGS is split into flags on purpose
common+=(${BENCH_ARGS:-})

echo "machine: $(nproc) cores; load before: $(uptime)" >&2
files=()
failed=()
IFS=, read -ra targets <<<"$TARGETS"
for target in "${targets[@]}"; do
	json="$OUT/$target.json"
	args=(bench --target "$target" --json "$json" "${common[@]}")
	if [[ $target == rhizon ]]; then
		start_rhizon
		args+=(--addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN")
	fi
	echo "== $target" >&2
	# One failed target does not hide the others' figures.
	if "$BIN" "${args[@]}"; then
		files+=("$json")
	else
		failed+=("$target")
		[[ -s $json ]] && files+=("$json")
	fi
	if [[ $target == rhizon ]]; then
		stop_rhizon
	fi
done
echo "load after: $(uptime)" >&2

if ((${#files[@]} > 0)); then
	cat "${files[@]}" >"$OUT/all.json"
	echo
	echo "== all runs (JSON Lines in $OUT/all.json)"
	"$BIN" bench --compare "$(
		IFS=,
		echo "${files[*]}"
	)"
fi
if ((${#failed[@]} > 0)); then
	echo "run-peers.sh: failed: ${failed[*]}" >&2
	exit 1
fi
