# Sourced by run-peers.sh (and usable on its own): start and stop a
# throw-away 3-node Rhizon cluster of `rhizon node` processes on free
# loopback ports, each with its own data directory and embedded NATS server,
# the three NATS servers clustered over routes (so the JetStream streams have
# 3 replicas, as in a real deployment).
#
#   rhizon_cluster_start BIN DIR  writes a token file, starts the nodes, waits
#                                 until every shard has 3 voters and a leader
#                                 (and, with NATS, every node's JetStream
#                                 ingress takes a command),
#                                 and sets RHIZON_BENCH_ADDR (the three gRPC
#                                 addresses, comma-separated),
#                                 RHIZON_BENCH_TOKEN and RHIZON_BENCH_NATS (the
#                                 three NATS client URLs with the node
#                                 credentials, comma-separated), and the
#                                 array RHIZON_CLUSTER_HTTP (each node's HTTP
#                                 address, in node order)
#   rhizon_cluster_stop           stops the nodes (TERM, then KILL after 15 s)
#                                 and removes DIR; safe to call twice
#
# Environment (all optional):
#   BENCH_SHARDS      shards of the cluster                   (8)
#   BENCH_RAFT_GROUPS Raft groups carrying them (--raft-groups)  (1: one leader, the
#                     peers' topology: etcd runs one Raft group, a JetStream KV one stream;
#                     3: one led by each node, the default of a real 3-node cluster;
#                     empty: the node's default (one per founding node since 2026-12-07, one per
#                     shard before); a binary without the flag gets none)
#   BENCH_NATS        "off" starts the nodes without NATS     (on)
#   BENCH_NODE_ARGS   more `rhizon node` flags for every node
#   BENCH_TLS         "on": the nodes serve TLS (gRPC, HTTP, Raft, NATS) with
#                     a throw-away CA made by openssl; RHIZON_TLS_CA is then
#                     exported for the CLI and `rhizon bench`, and
#                     RHIZON_BENCH_HTTP is https                 (off)
# shellcheck shell=bash

RHIZON_CLUSTER_PIDS=()
RHIZON_CLUSTER_HTTP=()
RHIZON_CLUSTER_DIR=""

# rhizon_free_ports N prints N distinct TCP ports on 127.0.0.1 that nothing
# listens on, below the kernel's ephemeral range (so that no outgoing
# connection or port-0 listener takes one meanwhile). A port is taken when a
# connection to it succeeds.
rhizon_free_ports() {
	local n=$1 lo=20000 hi=32000 eph p got=() seen=" "
	if [[ -r /proc/sys/net/ipv4/ip_local_port_range ]]; then
		read -r eph _ </proc/sys/net/ipv4/ip_local_port_range
		((eph > lo + 2000)) && hi=$((eph - 1))
	fi
	while ((${#got[@]} < n)); do
		p=$((lo + RANDOM % (hi - lo)))
		[[ $seen == *" $p "* ]] && continue
		seen+="$p "
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			continue
		fi
		got+=("$p")
	done
	echo "${got[@]}"
}

# rhizon_bench_certs DIR writes a CA (ca.pem) and a certificate for
# 127.0.0.1 signed by it (node.pem, node-key.pem), valid for a day.
rhizon_bench_certs() {
	local dir=$1
	if ! command -v openssl >/dev/null; then
		echo "BENCH_TLS=on needs openssl" >&2
		return 1
	fi
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
		-keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -subj /CN=rhizon-bench-ca 2>/dev/null &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$dir/node-key.pem" -out "$dir/node.csr" -subj /CN=rhizon-bench-node 2>/dev/null &&
		printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$dir/ext.cnf" &&
		openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
			-days 1 -extfile "$dir/ext.cnf" -out "$dir/node.pem" 2>/dev/null
}

rhizon_cluster_start() {
	local bin=$1 dir=$2 shards=${BENCH_SHARDS:-8} groups=${BENCH_RAFT_GROUPS-1} token secret i
	if [[ -n $groups ]] && ! "$bin" node --help 2>&1 | grep -q -- --raft-groups; then
		groups="" # an older build, in an A/B pair
	elif [[ -n $groups ]] && ((groups > shards)); then
		groups=$shards # a group carries at least one shard
	fi
	RHIZON_CLUSTER_DIR=$dir
	RHIZON_CLUSTER_PIDS=()
	mkdir -p "$dir"
	token=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	RHIZON_CLUSTER_OPS_TOKEN=ops-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	# The load's token, a service of the bench tenant (any workspace), and
	# an operator's: a tenant's status hides voters and indexes, which the
	# readiness check below reads.
	cat >"$dir/tokens.json" <<JSON
{"tokens":[{"token":"$token","principal":{"id":"bench","type":"service"},
            "scopes":[{"tenant":"bench","workspace":"*"}]},
           {"token":"$RHIZON_CLUSTER_OPS_TOKEN","role":"admin","principal":{"id":"ops","type":"user"},
            "scopes":[{"tenant":"bench","workspace":"*"}]}]}
JSON
	local tlsargs=() natstls=()
	RHIZON_BENCH_HTTP=http
	if [[ ${BENCH_TLS:-off} == on ]]; then
		rhizon_bench_certs "$dir" || return 1
		export RHIZON_TLS_CA=$dir/ca.pem
		tlsargs=(--tls-cert "$dir/node.pem" --tls-key "$dir/node-key.pem")
		natstls=(--tls)
		RHIZON_BENCH_HTTP=https
	else
		unset RHIZON_TLS_CA # plaintext nodes refuse --tls-ca alone
	fi
	# 6 ports per node: gRPC, HTTP, Raft, gossip (TCP and UDP), NATS
	# clients, NATS routes.
	local ports grpc=() http=() raft=() gossip=() nats=() route=()
	read -ra ports <<<"$(rhizon_free_ports 18)"
	for i in 0 1 2; do
		grpc+=("127.0.0.1:${ports[i * 6]}")
		http+=("127.0.0.1:${ports[i * 6 + 1]}")
		raft+=("127.0.0.1:${ports[i * 6 + 2]}")
		gossip+=("127.0.0.1:${ports[i * 6 + 3]}")
		nats+=("127.0.0.1:${ports[i * 6 + 4]}")
		route+=("127.0.0.1:${ports[i * 6 + 5]}")
	done
	RHIZON_CLUSTER_HTTP=("${http[@]}")
	local routes
	routes=$(
		IFS=,
		echo "${route[*]}"
	)
	for i in 0 1 2; do
		local args=(node --node-id "n$((i + 1))" --data-dir "$dir/n$((i + 1))" --token-file "$dir/tokens.json"
			--cluster-secret "$secret" --shards "$shards" ${groups:+--raft-groups "$groups"} --bootstrap-expect 3 --join "${gossip[0]}"
			--grpc-addr "${grpc[i]}" --http-addr "${http[i]}" --raft-addr "${raft[i]}" --gossip-addr "${gossip[i]}"
			--log-level warn "${tlsargs[@]}")
		if [[ ${BENCH_NATS:-on} == off ]]; then
			args+=(--nats-addr off)
		else
			args+=(--nats-addr "${nats[i]}" --nats-cluster-addr "${route[i]}" --nats-routes "$routes")
		fi
		# shellcheck disable=SC2206 # BENCH_NODE_ARGS is split into flags on purpose
		args+=(${BENCH_NODE_ARGS:-})
		"$bin" "${args[@]}" >"$dir/n$((i + 1)).log" 2>&1 &
		RHIZON_CLUSTER_PIDS+=($!)
	done
	RHIZON_BENCH_ADDR=$(
		IFS=,
		echo "${grpc[*]}"
	)
	RHIZON_BENCH_TOKEN=$token
	RHIZON_BENCH_NATS=""
	if [[ ${BENCH_NATS:-on} != off ]]; then
		# With the node credentials: the ingress workload reads the events
		# stream, which a client without them may not.
		RHIZON_BENCH_NATS=$("$bin" nats-url "${natstls[@]}" --cluster-secret "$secret" "$(
			IFS=,
			echo "${nats[*]}"
		)")
	fi

	# Ready: every node printed its banner (its replicas have leaders), and
	# `rhizon status` shows every shard with 3 voters and one leader.
	local status="" deadline=$((SECONDS + 180)) pid n
	while :; do
		for n in 1 2 3; do
			pid=${RHIZON_CLUSTER_PIDS[n - 1]}
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "rhizon node n$n exited before the cluster was ready:" >&2
				tail -n 40 "$dir/n$n.log" >&2
				return 1
			fi
		done
		if [[ $(grep -l 'is ready' "$dir"/n?.log 2>/dev/null | wc -l) -eq 3 ]]; then
			status=$("$bin" status --addr "${grpc[0]}" --token "$RHIZON_CLUSTER_OPS_TOKEN" 2>&1 || true)
			if rhizon_cluster_status_ok "$shards" <<<"$status"; then
				break
			fi
		fi
		if ((SECONDS >= deadline)); then
			echo "rhizon cluster not ready after 180 s; last status:" >&2
			echo "$status" >&2
			for n in 1 2 3; do
				echo "--- n$n.log" >&2
				tail -n 20 "$dir/n$n.log" >&2
			done
			return 1
		fi
		sleep 0.5
	done
	# JetStream: a clustered meta group can take tens of seconds to elect
	# its first leader, and until the streams exist the relay publishes
	# nothing. Measuring before that would leave out the events stream's
	# work, so wait until every node's ingress takes an asynchronous command.
	if [[ ${BENCH_NATS:-on} != off ]]; then
		for n in 1 2 3; do
			until "$bin" send --addr "${grpc[n - 1]}" --token "$token" --async --timeout 5s \
				"counter/bench-ready-n$n" add '{"amount":1}' >/dev/null 2>&1; do
				if ((SECONDS >= deadline)); then
					echo "rhizon cluster: JetStream ingress of n$n not ready after 180 s" >&2
					tail -n 20 "$dir/n$n.log" >&2
					return 1
				fi
				sleep 1
			done
		done
	fi
	local topo=""
	case $groups in
	"") ;;
	1) topo=" in one Raft group" ;;
	*) topo=" in $groups Raft groups" ;;
	esac
	echo "rhizon cluster ready: 3 nodes, $shards shards$topo with 3 replicas each; gRPC $RHIZON_BENCH_ADDR; NATS ${RHIZON_BENCH_NATS:-off} (data in $dir)" >&2
}

# rhizon_cluster_status_ok SHARDS reads `rhizon status` on stdin and
# succeeds when it lists SHARDS shards, each with 3 voters, one leader, and
# no learner, with 3 nodes alive, nothing rebalancing, and the leaderships
# spread (no node leads more than one Raft group above another): a run that
# starts with one node leading most shards measures that node, not the
# build (two A/B pairs of the same code once differed by 40% from that).
# Columns are found by their header, so older builds' status reads too.
rhizon_cluster_status_ok() {
	awk -v want="$1" '
		/^NODE +STATE/ { sect = "nodes"; next }
		/^SHARD +(GROUP +)?(HEALTH +)?NODE/ {
			sect = "shards"
			sub(/STATE HASH/, "STATE_HASH") # one column in the rows
			for (i = 1; i <= NF; i++) col[$i] = i
			next
		}
		/^rebalancing:/ { busy = 1 }
		NF == 0 { sect = ""; next }
		sect == "nodes" && $2 == "alive" { alive++; led[$1] += 0 }
		sect == "shards" {
			seen[$1] = 1
			# Leaderships are counted per Raft group: a group carrying
			# several shards shows its leader on each of their rows.
			g = ("GROUP" in col) ? $col["GROUP"] : $1
			if ($col["ROLE"] == "Leader") {
				leaders[$1]++
				if (!(g in gled)) { gled[g] = 1; led[$col["NODE"]]++ }
			}
			# VOTERS is the last column unless LEARNERS follows it.
			if (split($col["VOTERS"], v, ",") != 3 || NF > col["VOTERS"]) bad = 1
		}
		END {
			if (busy || bad || alive != 3) exit 1
			n = 0
			for (s in seen) { n++; if (leaders[s] != 1) exit 1 }
			lo = -1; hi = 0
			for (m in led) { if (lo < 0 || led[m] < lo) lo = led[m]; if (led[m] > hi) hi = led[m] }
			if (hi - lo > 1) exit 1
			exit (n == want ? 0 : 1)
		}'
}

rhizon_cluster_stop() {
	local pid
	for pid in "${RHIZON_CLUSTER_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	# The nodes drain gRPC and close their stores; give them 15 s.
	for pid in "${RHIZON_CLUSTER_PIDS[@]}"; do
		for _ in $(seq 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	RHIZON_CLUSTER_PIDS=()
	if [[ -n $RHIZON_CLUSTER_DIR ]]; then
		rm -rf "$RHIZON_CLUSTER_DIR"
		RHIZON_CLUSTER_DIR=""
	fi
}
