# Rhizon. `make run` starts a development node; `make test` runs the suite.
SHELL     := /bin/bash
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/rhizon
# The build cache is keyed by paths unless -trimpath: with it every clone of
# the repository (and the image build) reuses the compiled packages.
export GOFLAGS ?= -buildvcs=false -trimpath
# go vet runs once, by itself (go test would vet each package again).
TESTFLAGS ?= -count=1 -vet=off -timeout 20m
# The race detector runs where the code under test has goroutines, locks or
# channels of its own: the shard's Raft loop, the cluster's gossip, routing
# and rebalancing, the gateway's streams and batching, the ingress
# consumers and relays, the client's routing and batching, Badger's writers.
RACE_PKGS  := ./client/... ./cluster/... ./gateway/... ./ingress/... ./natsserver/... ./relay/... ./shard/... ./storage/...
# Without it: actor, engine and replay are single-goroutine by design (the engine
# imports no goroutines; DESIGN.md), api is generated code, internal holds
# test helpers and telemetry set-up, console serves embedded files, bench is the load harness (its runner's
# counters are atomics and one mutex), deploy checks manifests. cmd/rhizon's
# tests drive separately built rhizon processes: the detector would watch
# only the test's own client side, and instrumenting the 770-package binary
# costs more than its runs. actor/wasm locks only to hand one instance to
# one shard at a time (its tests were run with -race when it was written);
# examples are WebAssembly actors' sources; "." is the repository-level test (the
# README's Layout against the tree).
PLAIN_PKGS := . ./actor/... ./api/... ./bench/... ./cmd/... ./console/... ./deploy/... ./engine/... ./examples/... ./internal/... ./replay/...

.PHONY: wasm-examples build run test test-race test-plain test-quick test-pkgs lint proto bench fmt vet tools clean

build:
	CGO_ENABLED=1 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/rhizon

run: build
	./$(BIN) dev

# The example WebAssembly actors, for `rhizon node --wasm-actor TYPE=bin/NAME.wasm@REV`.
wasm-examples:
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -o bin/counter.wasm ./examples/wasm/counter

# The race build and the plain build share no compiled package, so they run
# side by side: the process-cluster tests of cmd/rhizon wait on elections
# while the race build compiles. Within each, one package at a time (-p 1):
# with -p 2 on both sides four test binaries shared the 2 cores, and the
# Raft-stability tests of cluster and client lost leaders to CPU starvation.
# cmd/rhizon's tests run in parallel, but hold one multi-node cluster at a
# time (clusterSlot).
test: test-pkgs
	$(MAKE) --no-print-directory -j2 --output-sync=target test-race test-plain

test-race:
	$(GO) test $(TESTFLAGS) -race -p 1 $(RACE_PKGS)

# -parallel applies to tests that call t.Parallel(): only cmd/rhizon's do.
test-plain: vet
	$(GO) test $(TESTFLAGS) -p 1 -parallel 3 $(PLAIN_PKGS)

# Every package is in RACE_PKGS or PLAIN_PKGS, so none goes untested.
test-pkgs:
	@missing=$$($(GO) list ./... | grep -vxF -f <($(GO) list $(RACE_PKGS) $(PLAIN_PKGS))); \
	if [ -n "$$missing" ]; then echo "add to RACE_PKGS or PLAIN_PKGS in the Makefile: $$missing"; exit 1; fi

# The inner loop: no race detector, -short (no process clusters, no peers).
test-quick:
	$(GO) test -count=1 -short -timeout 10m ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

lint:
	@command -v golangci-lint >/dev/null || { echo "golangci-lint v2.15.0 missing: make tools"; exit 1; }
	golangci-lint run ./...

# protoc comes from Debian (protobuf-compiler); the Go plugins from the module proxy.
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I api/proto/rhizon/v1 -I api/proto \
		--go_out=api/rhizonv1 --go_opt=paths=source_relative \
		--go-grpc_out=api/rhizonv1 --go-grpc_opt=paths=source_relative \
		api/proto/rhizon/v1/rhizon.proto
	# Registered as rhizon/record/v1/record.proto: a bare "record.proto"
	# collides with etcd's walpb in any binary that links both (the bench).
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I api/proto \
		--go_out=. --go_opt=module=github.com/rhizon/rhizon \
		api/proto/rhizon/record/v1/record.proto

# The Go benchmarks, then bench-peers: every workload at C = 16 and 128
# against Rhizon (a 3-node cluster of `rhizon node` processes with clustered
# NATS and 8 shards in one Raft group, the peers' topology, started by
# bench/rhizon-cluster.sh; BENCH_RAFT_GROUPS=3 for a real cluster's default
# of one group per node; BENCH_RHIZON=dev for one
# `rhizon dev` node) and each peer (etcd, jetstream-kv, jetstream-kv-sync:
# 3 servers each, started by rhizon bench), one after another, and the table
# of Rhizon's ratio to each peer (BENCH_* variables: see
# bench/run-peers.sh). bench-dev is a `rhizon dev` node alone. Both run
# wasm-counter, the example counter built by wasm-examples and deployed to
# Rhizon as a WebAssembly actor, beside w1-command.
BENCH_JSON ?= bin/bench/dev.json
BENCH_OUT  ?= bin/bench/peers
.PHONY: bench-go bench-peers bench-dev
bench: bench-go bench-peers

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3s ./engine/ ./cluster/ ./actor/wasm/

bench-peers: build wasm-examples
	BIN=$(BIN) BENCH_OUT=$(BENCH_OUT) bash bench/run-peers.sh

bench-dev: build wasm-examples
	BIN=$(BIN) BENCH_JSON=$(BENCH_JSON) bash bench/run-dev.sh

tools:
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0

clean:
	rm -rf bin data

# ---- Deploy (deploy/): container image, Compose end-to-end test ----
# image-local builds the static binary on the host and wraps it in a FROM
# scratch image (no image pull needed); image builds from source with the
# multi-stage deploy/Dockerfile (pulls golang:1.26). Both tag rhizon:<version>
# (the output of `rhizon version`) and rhizon:latest.
IMAGE     ?= rhizon
IMAGE_CTX := bin/image

.PHONY: image-local image deploy-e2e deploy-e2e-faults

image-local:
	rm -rf $(IMAGE_CTX) && mkdir -p $(IMAGE_CTX)/data
	CGO_ENABLED=0 GOOS=linux $(GO) build -ldflags "-s -w $(LDFLAGS)" -o $(IMAGE_CTX)/rhizon ./cmd/rhizon
	v=$$(./$(IMAGE_CTX)/rhizon version) && \
	docker build -f deploy/Dockerfile.scratch --build-arg VERSION=$$v -t $(IMAGE):$$v -t $(IMAGE):latest $(IMAGE_CTX) && \
	echo "built $(IMAGE):$$v"

image:
	DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

# Builds rhizon:latest with image-local, starts deploy/compose, waits for
# health, sends commands through every node, tears down (even on failure).
deploy-e2e: build image-local
	BIN=$(BIN) IMAGE=$(IMAGE):latest bash deploy/e2e.sh

# The Compose cluster under faults: docker kill of the container leading the
# most shards while writing, restart, 20 s network disconnect of another node;
# every acknowledged command must be on every node exactly once.
deploy-e2e-faults: image-local
	cd deploy && $(GO) test -tags dockere2e -count=1 -timeout 15m -run Compose -v .
