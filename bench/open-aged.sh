#!/usr/bin/env bash
# The goals table's open-loop run as it happens there: a 3-node cluster first
# takes the closed-loop workloads (their data stays, as in run-peers.sh),
# then runs w1-command open loop while every node's metrics are scraped twice
# a second. Prints the open-loop result and each half second in which a node's
# Raft entries took a mean of more than 20 ms (a stall; with the node's CPU,
# heap and submit latency then), to tell stalls of one node from stalls of all.
#
#   bash bench/open-aged.sh [bin/rhizon] [OUT_DIR]
#
# Environment (all optional):
#   AGED_WORKLOADS  closed-loop workloads first   (w1-command,w1-occ,ingress,saga)
#   AGED_RATE       open-loop rate                (2500)
#   AGED_DURATION   open-loop window in seconds   (30)
#   BENCH_SHARDS, BENCH_NATS, BENCH_NODE_ARGS: see rhizon-cluster.sh
# OUT_DIR (default: a temporary directory, removed) keeps the runs' output,
# the scrapes (scrape.txt: time node metric value) and the nodes' logs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${1:-bin/rhizon}
keep=${2:-}
out=${keep:-$(mktemp -d "${TMPDIR:-/tmp}/rhizon-aged.XXXXXX")}
mkdir -p "$out"
# shellcheck source=bench/rhizon-cluster.sh
source "$here/rhizon-cluster.sh"
scraper=""
cleanup() {
	[[ -n $scraper ]] && kill "$scraper" 2>/dev/null
	cp "$out"/c/n?.log "$out"/ 2>/dev/null || true
	rhizon_cluster_stop
	[[ -z $keep ]] && rm -rf "$out"
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rhizon_cluster_start "$bin" "$out/c"
nats=()
[[ -n $RHIZON_BENCH_NATS ]] && nats=(--nats "$RHIZON_BENCH_NATS")
"$bin" bench --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN" "${nats[@]}" \
	--workload "${AGED_WORKLOADS:-w1-command,w1-occ,ingress,saga}" --concurrency 128 --warmup 3s --duration 10s \
	>"$out/closed.txt" 2>"$out/closed.progress" || true
grep -E '^ +[a-z0-9-]+ +rhizon' "$out/closed.txt" || true

metrics='^(rhizon_entry_duration_seconds_(sum|count)|rhizon_submit_duration_seconds_(sum|count)|go_memstats_heap_alloc_bytes|process_cpu_seconds_total)'
(
	while true; do
		ts=$(date +%s.%N)
		for i in "${!RHIZON_CLUSTER_HTTP[@]}"; do
			curl -s ${RHIZON_TLS_CA:+--cacert "$RHIZON_TLS_CA"} "$RHIZON_BENCH_HTTP://${RHIZON_CLUSTER_HTTP[$i]}/metrics" | grep -E "$metrics" |
				awk -v ts="$ts" -v n="n$((i + 1))" '{ split($1, a, "{"); print ts, n, a[1], $2 }'
		done
		sleep 0.5
	done >"$out/scrape.txt"
) &
scraper=$!
t1=$(date +%s.%N)
"$bin" bench --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN" --workload w1-command \
	--rate "${AGED_RATE:-2500}" --concurrency 512 --warmup 3s --duration "${AGED_DURATION:-30}s" \
	>"$out/open.txt" 2>"$out/open.progress" || true
kill "$scraper" 2>/dev/null || true
scraper=""
grep -E '^ +w1-command +rhizon' "$out/open.txt" || true

# One line per node and scrape: sums over shards, then differences between
# consecutive scrapes of a node. Times are seconds from the open loop's start
# (its 3 s warm-up included).
echo "stalls (node, seconds into the open loop, CPU cores, mean entry ms, mean submit ms, heap MB):"
awk -v t1="$t1" '
	{ k = $1 SUBSEP $2; v[k, $3] += $4; if (!(k in seen)) { seen[k] = 1; order[++n] = k } }
	END {
		for (i = 1; i <= n; i++) {
			split(order[i], p, SUBSEP); node = p[2]; t = p[1]
			if (node in last) {
				q = last[node]; dt = t - lt[node]
				ec = v[order[i], "rhizon_entry_duration_seconds_count"] - v[q, "rhizon_entry_duration_seconds_count"]
				es = v[order[i], "rhizon_entry_duration_seconds_sum"] - v[q, "rhizon_entry_duration_seconds_sum"]
				sc = v[order[i], "rhizon_submit_duration_seconds_count"] - v[q, "rhizon_submit_duration_seconds_count"]
				ss = v[order[i], "rhizon_submit_duration_seconds_sum"] - v[q, "rhizon_submit_duration_seconds_sum"]
				cpu = (v[order[i], "process_cpu_seconds_total"] - v[q, "process_cpu_seconds_total"]) / dt
				if (ec > 0 && 1000 * es / ec > 20)
					printf "  %s %6.1f s  cpu %.2f  entry %5.1f ms  submit %5.1f ms  heap %5.0f MB\n", node, t - t1, cpu,
						1000 * es / ec, (sc > 0 ? 1000 * ss / sc : 0), v[order[i], "go_memstats_heap_alloc_bytes"] / 1e6
			}
			last[node] = order[i]; lt[node] = t
		}
	}' "$out/scrape.txt" | sort -k2,2n
