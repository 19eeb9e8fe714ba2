# Rhizon. `make run` starts a development node; `make test` runs the suite.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/rhizon
# Two cores: one test binary at a time, each with up to 2 parallel tests.
TESTFLAGS ?= -race -count=1 -p 1 -parallel 2 -timeout 20m

.PHONY: build run test lint proto bench fmt vet tools clean

build:
	CGO_ENABLED=1 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/rhizon

run: build
	./$(BIN) dev

test:
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...

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

# The Go benchmarks, then bench-peers: every workload at C = 16 and 128
# against Rhizon (a 3-node cluster of `rhizon node` processes with clustered
# NATS, started by bench/rhizon-cluster.sh; BENCH_RHIZON=dev for one
# `rhizon dev` node) and each peer (etcd, jetstream-kv, jetstream-kv-sync:
# 3 servers each, started by rhizon bench), one after another, and the table
# of Rhizon's ratio to each peer (BENCH_* variables: see
# bench/run-peers.sh). bench-dev is a `rhizon dev` node alone.
BENCH_JSON ?= bin/bench/dev.json
BENCH_OUT  ?= bin/bench/peers
.PHONY: bench-go bench-peers bench-dev
bench: bench-go bench-peers

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3s ./engine/ ./cluster/

bench-peers: build
	BIN=$(BIN) BENCH_OUT=$(BENCH_OUT) bash bench/run-peers.sh

bench-dev: build
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
