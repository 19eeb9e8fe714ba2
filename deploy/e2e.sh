#!/usr/bin/env bash
# End-to-end check of deploy/compose: starts the 3-node cluster from the
# image $IMAGE (default rhizon:latest, built by `make image-local`), waits until
# every node is healthy, sends commands through the published gRPC port of
# each node, checks the state from every node, and tears everything down (also
# on failure or Ctrl-C). Run with `make deploy-e2e`.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BIN=${BIN:-$root/bin/rhizon}
[[ $BIN = /* ]] || BIN=$root/$BIN
export RHIZON_IMAGE=${IMAGE:-rhizon:latest}
export RHIZON_PORT_PREFIX=${E2E_PORT_PREFIX:-3}   # host ports 3100/3101, 3200/3201, 3300/3301
WAIT=${E2E_WAIT:-180}
project=rhizon-e2e-$$
start=$(date +%s)

if docker compose version >/dev/null 2>&1; then dc=(docker compose); else dc=(docker-compose); fi
work=$(mktemp -d)
token=e2e-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$work/tokens.json" <<JSON
{"tokens":[{"token":"$token","role":"admin","principal":{"id":"e2e","type":"user"},"scopes":[{"tenant":"acme","workspace":"*"}]}]}
JSON
chmod 0644 "$work/tokens.json" # the container runs as uid 65532
export RHIZON_TOKEN_FILE=$work/tokens.json
RHIZON_CLUSTER_SECRET=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d " \n")
export RHIZON_CLUSTER_SECRET
compose() { "${dc[@]}" -p "$project" -f "$here/compose/docker-compose.yml" "$@"; }

status=1
teardown() {
	if [[ $status -ne 0 ]]; then
		echo "--- e2e FAILED; container logs (tail):" >&2
		compose logs --no-color --tail 40 >&2 || true
	fi
	compose down -v --remove-orphans >/dev/null 2>&1 || true
	rm -rf "$work"
	echo "e2e: $([[ $status -eq 0 ]] && echo PASS || echo FAIL) in $(($(date +%s) - start))s"
}
trap teardown EXIT
trap 'exit 130' INT TERM

log() { echo "e2e [$(($(date +%s) - start))s] $*"; }

log "starting $RHIZON_IMAGE as project $project"
compose up -d

nodes=(n1 n2 n3)
ports=("${RHIZON_PORT_PREFIX}100" "${RHIZON_PORT_PREFIX}200" "${RHIZON_PORT_PREFIX}300")
http=("${RHIZON_PORT_PREFIX}101" "${RHIZON_PORT_PREFIX}201" "${RHIZON_PORT_PREFIX}301")

log "waiting up to ${WAIT}s for every node to be healthy"
deadline=$(($(date +%s) + WAIT))
for i in 0 1 2; do
	cid=$(compose ps -q "${nodes[$i]}")
	until [[ $(docker inspect -f '{{.State.Health.Status}}' "$cid") == healthy ]] &&
		curl -fsS "http://127.0.0.1:${http[$i]}/readyz" >/dev/null 2>&1; do
		if [[ $(docker inspect -f '{{.State.Running}}' "$cid") != true ]]; then
			log "${nodes[$i]} is not running"
			exit 1
		fi
		if (($(date +%s) > deadline)); then
			log "${nodes[$i]} not healthy: $(docker inspect -f '{{.State.Health.Status}}' "$cid")"
			exit 1
		fi
		sleep 2
	done
	log "${nodes[$i]} healthy (gRPC health + /readyz on :${http[$i]})"
done
curl -fsS "http://127.0.0.1:${http[0]}/healthz" >/dev/null

export RHIZON_TOKEN=$token
st=$("$BIN" status --addr "127.0.0.1:${ports[0]}")
sed -n 1,7p <<<"$st" # nodes table (a pipe into head would SIGPIPE under pipefail)

# One command per node, each through that node's published gRPC port.
for i in 0 1 2; do
	"$BIN" send counter/e2e add '{"amount":1}' --addr "127.0.0.1:${ports[$i]}" --idempotency-key "e2e-$i" >/dev/null
	log "sent add 1 through ${nodes[$i]} (:${ports[$i]})"
done
# A retry with a used key must not apply twice.
"$BIN" send counter/e2e add '{"amount":1}' --addr "127.0.0.1:${ports[1]}" --idempotency-key e2e-0 >/dev/null

for i in 0 1 2; do
	got=$("$BIN" get counter/e2e --addr "127.0.0.1:${ports[$i]}" -o json)
	if ! grep -Eq '"version":[[:space:]]*"?3"?' <<<"$got"; then
		log "unexpected state through ${nodes[$i]}: $got"
		exit 1
	fi
done
log "state through every node: version 3 ($got)"

# Through JetStream: SubmitAsync on n2 (the three embedded NATS servers form
# one cluster; streams have 3 replicas), the event watched through n3. The
# streams appear once JetStream has elected its leaders: retry for a minute.
deadline=$(($(date +%s) + 60))
until "$BIN" send counter/e2e-async add '{"amount":5}' --async --addr "127.0.0.1:${ports[1]}" --idempotency-key e2e-async >/dev/null 2>&1; do
	if (($(date +%s) > deadline)); then
		log "send --async through n2 kept failing"
		"$BIN" send counter/e2e-async add '{"amount":5}' --async --addr "127.0.0.1:${ports[1]}" --idempotency-key e2e-async || true
		exit 1
	fi
	sleep 2
done
log "send --async through n2 enqueued"
ev=$("$BIN" watch --entity counter/e2e-async --from-beginning --count 1 --timeout 60s --addr "127.0.0.1:${ports[2]}" -o json)
if ! grep -q 'evt.counter' <<<"$ev"; then
	log "watch through n3 did not see the event: $ev"
	exit 1
fi
log "watch through n3 saw the asynchronous command's event"
# Captured first: `curl | grep -q` fails under pipefail when grep exits early.
metrics=$(curl -fsS "http://127.0.0.1:${http[0]}/metrics")
grep -q '^rhizon_commands_total' <<<"$metrics" || { log "no rhizon_commands_total on n1 /metrics"; exit 1; }
log "n1 /metrics exports rhizon_commands_total"
status=0
