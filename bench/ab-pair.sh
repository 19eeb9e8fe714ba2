#!/usr/bin/env bash
# Compares two rhizon builds on a machine whose speed drifts: runs both
# 3-node clusters AT THE SAME TIME, each with its own `rhizon bench`, so that
# both see the same slowdowns, and prints each build's ops/s and the CPU one
# operation cost (utime + stime of its 3 nodes and its load generator over
# the window, from /proc). Run it twice with A and B swapped: the cluster
# that starts second has a few seconds less of the window.
#
#   BIN_A=old/rhizon BIN_B=bin/rhizon bash bench/ab-pair.sh
#
# Environment (all optional besides BIN_A and BIN_B):
#   AB_WORKLOAD     workload            (w1-command)
#   AB_CONCURRENCY  workers per build   (128)
#   AB_DURATION     window in seconds   (40)
#   AB_ARGS         more `rhizon bench` flags for both
#   BENCH_SHARDS, BENCH_NATS, BENCH_NODE_ARGS: see rhizon-cluster.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${BIN_A:?set BIN_A and BIN_B to the two rhizon binaries}" "${BIN_B:?set BIN_B}"
workload=${AB_WORKLOAD:-w1-command} conc=${AB_CONCURRENCY:-128} dur=${AB_DURATION:-40}
out=$(mktemp -d "${TMPDIR:-/tmp}/rhizon-ab.XXXXXX")

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# side NAME BIN: one cluster, one load generator, one result line.
side() {
	local name=$1 bin=$2 pids p before=0 after=0 bp ops
	# shellcheck source=bench/rhizon-cluster.sh
	source "$here/rhizon-cluster.sh"
	rhizon_cluster_start "$bin" "$out/$name" 2>"$out/$name.start" || {
		cat "$out/$name.start" >&2
		return 1
	}
	trap rhizon_cluster_stop EXIT
	trap 'exit 130' INT TERM
	"$bin" bench --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN" --workload "$workload" \
		--concurrency "$conc" --warmup 3s --duration "${dur}s" --progress=false \
		--json "$out/$name.json" ${AB_ARGS:-} >"$out/$name.bench" 2>&1 &
	bp=$!
	pids=("${RHIZON_CLUSTER_PIDS[@]}" "$bp")
	sleep 4 # past the warm-up
	for p in "${pids[@]}"; do before=$((before + $(cpu_ticks "$p"))); done
	sleep $((dur - 2))
	for p in "${pids[@]}"; do after=$((after + $(cpu_ticks "$p"))); done
	wait "$bp"
	ops=$(grep -o '"throughput":[0-9.]*' "$out/$name.json" | head -1 | cut -d: -f2)
	awk -v n="$name" -v b="$bin" -v o="$ops" -v t=$((after - before)) -v w=$((dur - 2)) -v hz="$(getconf CLK_TCK)" \
		'BEGIN { printf "%s  %-30s %8.0f ops/s  %7.0f us CPU per op (3 nodes + client)\n", n, b, o, (t / hz) / (w * o) * 1e6 }'
}

side A "$BIN_A" >"$out/A.result" &
a=$!
sleep 4 # free ports are picked per cluster: do not race for them
side B "$BIN_B" >"$out/B.result" &
b=$!
status=0
wait "$a" || status=1
wait "$b" || status=1
cat "$out/A.result" "$out/B.result"
if ((status != 0)); then
	echo "a side failed; its output is in $out" >&2
	exit 1
fi
rm -rf "$out"
