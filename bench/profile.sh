#!/usr/bin/env bash
# One 3-node cluster, one `rhizon bench` run, and where its CPU went: ops/s,
# the CPU one operation cost (utime + stime of the 3 nodes and the load
# generator from /proc, per process), the mean commands per Raft entry the
# leaders proposed and the Raft log entries n1 stored per second (all groups),
# and, with PROF=1, a CPU profile of n1 over the middle of the window.
#
#   bash bench/profile.sh [bin/rhizon]
#
# Environment (all optional):
#   PROF_WORKLOAD     workload            (w1-command)
#   PROF_CONCURRENCY  workers             (128)
#   PROF_DURATION     window in seconds   (30)
#   PROF_ARGS         more `rhizon bench` flags
#   PROF_BEFORE       workloads run first, unmeasured (3 s warm-up, 10 s each), to
#                     measure on a cluster as loaded as the goals table leaves it
#                     (e.g. w1-command,w1-occ before saga); wasm-counter needs
#                     PROF_ARGS=--wasm-module=bin/counter.wasm
#   PROF=1            write n1's CPU profile to PROF_OUT (/tmp/rhizon-n1.pprof)
#   PROF_ALL=1        with PROF=1, every node's: PROF_OUT with .n1, .n2, .n3 appended
#   PROF_KEEP_LOG     a directory to copy the nodes' logs to
#   PROF_METRICS      a file to write n1's /metrics to at the end of the window
#   BENCH_SHARDS, BENCH_NATS, BENCH_NODE_ARGS, BENCH_TLS: see rhizon-cluster.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${1:-bin/rhizon}
workload=${PROF_WORKLOAD:-w1-command} conc=${PROF_CONCURRENCY:-128} dur=${PROF_DURATION:-30}
out=$(mktemp -d "${TMPDIR:-/tmp}/rhizon-prof.XXXXXX")
if [[ ${PROF:-0} == 1 ]]; then
	BENCH_NODE_ARGS="${BENCH_NODE_ARGS:-} --pprof"
fi
export BENCH_NODE_ARGS

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# counts: the commands and entries the nodes proposed (only a group's leader
# proposes, and with one group that need not be n1) and the Raft log entries
# n1 stored, from one scrape of each node's metrics (sums over shards).
counts() {
	local h
	for h in "${RHIZON_CLUSTER_HTTP[@]}"; do
		curl -s ${RHIZON_TLS_CA:+--cacert "$RHIZON_TLS_CA"} "$RHIZON_BENCH_HTTP://$h/metrics" | sed "s/^/$h /"
	done | awk -v n1="$http1" '
		index($2, "rhizon_batch_size_sum") == 1 { c += $3 }
		index($2, "rhizon_batch_size_count") == 1 { e += $3 }
		$1 == n1 && index($2, "rhizon_raftlog_entries") == 1 { l += $3 }
		END { printf "%.0f %.0f %.0f", c, e, l }'
}

# shellcheck source=bench/rhizon-cluster.sh
source "$here/rhizon-cluster.sh"
# The copy may fail (set -e holds in the trap too): the nodes must stop anyway.
trap '[[ -n ${PROF_KEEP_LOG:-} ]] && { mkdir -p "$PROF_KEEP_LOG" && cp "$out"/c/n?.log "$out"/bench.txt "$out"/progress.txt "$PROF_KEEP_LOG"/ 2>/dev/null || true; }; rhizon_cluster_stop; rm -rf "$out"' EXIT
trap 'exit 130' INT TERM # so that a killed run stops its nodes too
rhizon_cluster_start "$bin" "$out/c"
http1=${RHIZON_CLUSTER_HTTP[0]}

nats=()
[[ -n $RHIZON_BENCH_NATS ]] && nats=(--nats "$RHIZON_BENCH_NATS") # for the ingress and saga workloads
if [[ -n ${PROF_BEFORE:-} ]]; then
	"$bin" bench --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN" "${nats[@]}" --workload "$PROF_BEFORE" \
		--concurrency "$conc" --warmup 3s --duration 10s ${PROF_ARGS:-} >"$out/before.txt" 2>&1
fi
# Progress lines (stderr) tell when the workload's setup is over: w1-occ
# first creates its 10,000 entities, which must not count as the window's.
"$bin" bench --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN" "${nats[@]}" --workload "$workload" \
	--concurrency "$conc" --warmup 3s --duration "${dur}s" \
	--json "$out/run.json" ${PROF_ARGS:-} >"$out/bench.txt" 2>"$out/progress.txt" &
bp=$!
pids=("${RHIZON_CLUSTER_PIDS[@]}" "$bp")
names=(n1 n2 n3 client)
for ((i = 0; i < 600; i++)); do
	grep -q 'warm-up' "$out/progress.txt" 2>/dev/null && break
	kill -0 "$bp" 2>/dev/null || break
	sleep 0.2
done
sleep 2 # the first line comes a second in: the window starts with the measuring
if ! kill -0 "$bp" 2>/dev/null; then
	echo "rhizon bench ended before the window:" >&2
	cat "$out/bench.txt" "$out/progress.txt" >&2
	exit 1
fi
before=()
t0=$(date +%s.%N)
for p in "${pids[@]}"; do before+=("$(cpu_ticks "$p")"); done
read -r cmds0 ents0 log0 <<<"$(counts)"
if [[ ${PROF:-0} == 1 ]]; then
	prof_out=${PROF_OUT:-/tmp/rhizon-n1.pprof} prof_nodes=1
	[[ ${PROF_ALL:-0} == 1 ]] && prof_nodes=${#RHIZON_CLUSTER_PIDS[@]}
	for ((i = 0; i < prof_nodes; i++)); do
		to=$prof_out
		[[ ${PROF_ALL:-0} == 1 ]] && to=$prof_out.n$((i + 1))
		curl -s ${RHIZON_TLS_CA:+--cacert "$RHIZON_TLS_CA"} -o "$to" \
			"$RHIZON_BENCH_HTTP://${RHIZON_CLUSTER_HTTP[i]}/debug/pprof/profile?seconds=$((dur - 6))" &
	done
fi
sleep $((dur - 2))
after=()
for p in "${pids[@]}"; do after+=("$(cpu_ticks "$p")"); done
t1=$(date +%s.%N)
read -r cmds1 ents1 log1 <<<"$(counts)"
if [[ -n ${PROF_METRICS:-} ]]; then
	curl -s ${RHIZON_TLS_CA:+--cacert "$RHIZON_TLS_CA"} -o "$PROF_METRICS" "$RHIZON_BENCH_HTTP://$http1/metrics"
fi
while kill -0 "$bp" 2>/dev/null; do sleep 0.2; done
cat "$out/bench.txt" | tail -n 12
ops=$(grep -o '"throughput":[0-9.]*' "$out/run.json" | head -1 | cut -d: -f2)
hz=$(getconf CLK_TCK) total=0
w=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
for i in "${!pids[@]}"; do
	t=$((after[i] - before[i]))
	total=$((total + t))
	awk -v n="${names[i]}" -v t="$t" -v hz="$hz" -v w="$w" -v o="$ops" \
		'BEGIN { printf "%-7s %5.2f cores  %6.0f us per op\n", n, t / hz / w, t / hz / (w * o) * 1e6 }'
done
awk -v t="$total" -v hz="$hz" -v w="$w" -v o="$ops" -v c=$((cmds1 - cmds0)) -v e=$((ents1 - ents0)) -v l=$((log1 - log0)) \
	'BEGIN { printf "total   %5.2f cores  %6.0f us per op at %.0f ops/s; commands per entry %.1f, Raft log entries on n1 %.0f/s\n", t / hz / w, t / hz / (w * o) * 1e6, o, (e ? c / e : 0), l / w }'
