# Sourced by run-dev.sh and run-peers.sh: start and stop a throw-away
# `rhizon dev` node on free loopback ports with a fresh data directory.
#
#   rhizon_dev_start BIN DIR   starts it, waits for its banner, and sets
#                              RHIZON_BENCH_ADDR, RHIZON_BENCH_TOKEN and
#                              RHIZON_BENCH_NATS (its NATS client URL)
#   rhizon_dev_stop            stops it (TERM, then KILL after 15 s) and
#                              removes DIR; safe to call twice
#
# The node runs its embedded NATS server (JetStream ingress, outbox relay),
# as `rhizon dev` does by default; BENCH_NATS=off starts it with
# --nats-addr off (then ingress and saga cannot run).
# shellcheck shell=bash

RHIZON_DEV_PID=""
RHIZON_DEV_DIR=""

rhizon_dev_start() {
	local bin=$1 dir=$2 line nats=127.0.0.1:0
	RHIZON_DEV_DIR=$dir
	mkdir -p "$dir"
	if [[ ${BENCH_NATS:-on} == off ]]; then
		nats=off
	fi
	# Port 0 everywhere: the node binds free ports and prints the ones it got.
	"$bin" dev --data-dir "$dir/data" --token-file "$dir/dev-token.json" \
		--grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --raft-addr 127.0.0.1:0 \
		--gossip-addr 127.0.0.1:0 --nats-addr "$nats" --log-level warn >"$dir/dev.log" 2>&1 &
	RHIZON_DEV_PID=$!
	# The banner's line we need: "export RHIZON_ADDR=host:port RHIZON_TOKEN=...".
	line=""
	for _ in $(seq 600); do # 60 s
		line=$(grep -m1 'export RHIZON_ADDR=' "$dir/dev.log" || true)
		[[ -n $line ]] && break
		if ! kill -0 "$RHIZON_DEV_PID" 2>/dev/null; then
			echo "rhizon dev exited before it was ready:" >&2
			cat "$dir/dev.log" >&2
			return 1
		fi
		sleep 0.1
	done
	if [[ -z $line ]]; then
		echo "rhizon dev not ready after 60 s:" >&2
		cat "$dir/dev.log" >&2
		return 1
	fi
	RHIZON_BENCH_ADDR=$(sed -n 's/.*RHIZON_ADDR=\([^ ]*\).*/\1/p' <<<"$line")
	RHIZON_BENCH_TOKEN=$(sed -n 's/.*RHIZON_TOKEN=\([^ ]*\).*/\1/p' <<<"$line")
	# The banner's "  NATS:      nats://host:port (JetStream)" line.
	RHIZON_BENCH_NATS=$(sed -n 's/^ *NATS: *\(nats:[^ ]*\).*/\1/p' "$dir/dev.log" | head -n 1)
	# Measure with the outbox relay running: wait until the JetStream
	# ingress takes an asynchronous command.
	if [[ -n $RHIZON_BENCH_NATS ]]; then
		local tries=0
		until "$bin" send --addr "$RHIZON_BENCH_ADDR" --token "$RHIZON_BENCH_TOKEN" --async --timeout 5s \
			counter/bench-ready add '{"amount":1}' >/dev/null 2>&1; do
			if ((++tries >= 60)); then
				echo "rhizon dev: JetStream ingress not ready after 60 tries" >&2
				tail -n 20 "$dir/dev.log" >&2
				return 1
			fi
			sleep 1
		done
	fi
	echo "rhizon dev ready at $RHIZON_BENCH_ADDR, NATS ${RHIZON_BENCH_NATS:-off} (data in $dir)" >&2
}

rhizon_dev_stop() {
	local pid=$RHIZON_DEV_PID
	RHIZON_DEV_PID=""
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
	if [[ -n $RHIZON_DEV_DIR ]]; then
		rm -rf "$RHIZON_DEV_DIR"
		RHIZON_DEV_DIR=""
	fi
}
