package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
)

// Rhizon command actors for Target.Command.
const (
	// CommandCounter sends cmd.counter.add {"amount":1}: the server reads
	// the counter, adds and records the new value; the client sends no
	// state at all. It is the default: the actor-native form.
	CommandCounter = "counter"
	// CommandKV sends cmd.kv.update with the workload's document and no
	// expected version: the same bytes as w1-occ's update without its
	// read, for a comparison with a peer's unconditional put.
	CommandKV = "kv"
)

// Rhizon routing modes for RhizonConfig.Route.
const (
	// RouteLeader sends each command and linearizable read straight to
	// the gateway of its shard's leader (the Go client's leader routing):
	// no node forwards in steady state. The default.
	RouteLeader = "leader"
	// RouteAny spreads operations round-robin over the addresses, as a
	// client unaware of shards would; two thirds of a 3-node cluster's
	// operations are then forwarded to the leader by the node they reach.
	RouteAny = "any"
)

// Defaults of RhizonConfig.
const (
	DefaultConnsPerAddr     = 2
	DefaultSetupConcurrency = 64
)

// RhizonConfig configures the rhizon target.
type RhizonConfig struct {
	// Addrs are gateway gRPC addresses (host:port). With RouteAny
	// operations go to them round-robin: any node takes any request, so one
	// address is enough for a cluster, but spreading the load spreads the
	// forwarding work. With RouteLeader they are where the client learns
	// the cluster's nodes and shard leaders from.
	Addrs []string
	// Route is RouteLeader (default) or RouteAny.
	Route string
	// NATSTLS, when set, is how the ingress workload verifies the NATS
	// servers (tls:// URLs).
	NATSTLS *tls.Config
	// Token, Tenant and Workspace as for client.Dial (empty tenant and
	// workspace: the token's own).
	Token, Tenant, Workspace string
	// Conns is the number of gRPC connections (0: DefaultConnsPerAddr per
	// address). One HTTP/2 connection carries any number of calls, but all
	// of them through one socket and one reader goroutine on each side,
	// which caps throughput before the server does. With RouteLeader it is
	// divided among the addresses (rounded up), and every node the client
	// routes to gets that many.
	Conns int
	// CommandActor is what Command sends: CommandCounter (default) or
	// CommandKV.
	CommandActor string
	// SetupConcurrency bounds the creates in flight during Setup
	// (0: DefaultSetupConcurrency).
	SetupConcurrency int
	// ClientOptions are added to every connection's options.
	ClientOptions []client.Option
	// NATS are the nodes' NATS client URLs (nats://host:port), which the
	// ingress workload publishes to, round-robin, one connection each.
	NATS []string
	// WasmModule is the WebAssembly counter (examples/wasm/counter, built
	// with GOOS=wasip1 GOARCH=wasm) that the wasm-counter workload deploys
	// as WasmType (default DefaultWasmType); nil: wasm-counter cannot run.
	WasmModule []byte
	WasmType   string
}

// Rhizon is the target for a Rhizon node or cluster, through the Go client:
// its retries of unknown outcomes reuse the idempotency key, so a retried
// update is applied at most once and its latency includes the retry.
type Rhizon struct {
	cfg     RhizonConfig
	clients []*client.Client
	next    atomic.Uint64
	// keyPrefix + a counter make every operation's idempotency key unique
	// across runs and processes without a crypto/rand read per operation.
	keyPrefix string
	keys      atomic.Uint64
	// ing and saga are the asynchronous workloads' state (rhizon_async.go),
	// set by Setup, which the runner never calls during a run.
	ing  *rhizonIngress
	saga *rhizonSaga
	// wasmCmd is the wasm-counter's command type, cmd.<WasmType>.add.
	wasmCmd string
}

var _ Target = (*Rhizon)(nil)

// NewRhizon connects to the gateways of cfg. Like client.Dial it does not
// wait for a connection: the first operation does.
func NewRhizon(cfg RhizonConfig) (*Rhizon, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("bench: rhizon target needs at least one address")
	}
	switch cfg.CommandActor {
	case "":
		cfg.CommandActor = CommandCounter
	case CommandCounter, CommandKV:
	default:
		return nil, fmt.Errorf("bench: command actor %q: use %s or %s", cfg.CommandActor, CommandCounter, CommandKV)
	}
	switch cfg.Route {
	case "":
		cfg.Route = RouteLeader
	case RouteLeader, RouteAny:
	default:
		return nil, fmt.Errorf("bench: route %q: use %s or %s", cfg.Route, RouteLeader, RouteAny)
	}
	if cfg.Conns <= 0 {
		cfg.Conns = DefaultConnsPerAddr * len(cfg.Addrs)
	}
	if cfg.SetupConcurrency <= 0 {
		cfg.SetupConcurrency = DefaultSetupConcurrency
	}
	if cfg.WasmType == "" {
		cfg.WasmType = DefaultWasmType
	}
	t := &Rhizon{cfg: cfg, keyPrefix: "bench-" + client.NewID()[:16] + "-", wasmCmd: "cmd." + cfg.WasmType + ".add"}
	opts := append([]client.Option{client.WithToken(cfg.Token), client.WithTenant(cfg.Tenant), client.WithWorkspace(cfg.Workspace)}, cfg.ClientOptions...)
	if cfg.Route == RouteLeader {
		perNode := (cfg.Conns + len(cfg.Addrs) - 1) / len(cfg.Addrs)
		c, err := client.DialCluster(cfg.Addrs, append(opts, client.WithLeaderRouting(true), client.WithConnsPerNode(min(perNode, 64)))...)
		if err != nil {
			return nil, err
		}
		t.clients = []*client.Client{c}
		return t, nil
	}
	for i := range cfg.Conns {
		c, err := client.Dial(cfg.Addrs[i%len(cfg.Addrs)], opts...)
		if err != nil {
			_ = t.Close()
			return nil, err
		}
		t.clients = append(t.clients, c)
	}
	return t, nil
}

// Name is "rhizon".
func (t *Rhizon) Name() string { return "rhizon" }

// Close closes every connection.
func (t *Rhizon) Close() error {
	t.closeAsync()
	var errs []error
	for _, c := range t.clients {
		errs = append(errs, c.Close())
	}
	t.clients = nil
	return errors.Join(errs...)
}

func (t *Rhizon) client() *client.Client {
	if len(t.clients) == 1 {
		return t.clients[0]
	}
	return t.clients[t.next.Add(1)%uint64(len(t.clients))]
}

func (t *Rhizon) key() string {
	return t.keyPrefix + strconv.FormatUint(t.keys.Add(1), 36)
}

// Setup creates the workload's kv documents when its operations update
// them (w1-occ, or commands with CommandKV): kv refuses to update a
// document that does not exist. The creates carry a fixed idempotency key
// (keys are scoped to the entity), so setting up again against the same
// server answers from the stored results and writes nothing.
//
// For ingress and saga it prepares their asynchronous paths instead
// (rhizon_async.go) and runs one operation end to end; for wasm-counter it
// deploys and activates the WASM counter (rhizon_wasmcounter.go).
func (t *Rhizon) Setup(ctx context.Context, w Workload) error {
	if handled, err := t.setupAsync(ctx, w); handled || err != nil {
		return err
	}
	if w.Op == OpWasm {
		return t.setupWasm(ctx, w)
	}
	if w.Op != OpOCC && t.cfg.CommandActor != CommandKV {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idx := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	doc := kvDoc(w.Payload(0))
	for range min(t.cfg.SetupConcurrency, w.Entities) {
		wg.Go(func() {
			for i := range idx {
				e := w.Entity(i)
				resp, err := t.client().Submit(ctx, &pb.SubmitRequest{
					Address: &pb.Address{ActorType: "kv", EntityId: e}, Type: "cmd.kv.create",
					Payload: doc, IdempotencyKey: "bench-setup-create", CommandId: t.key(),
				})
				if err != nil {
					fail(fmt.Errorf("bench: create kv/%s: %w", e, t.classify(err)))
					continue
				}
				if r := resp.GetResult(); r.GetStatus() != pb.Status_STATUS_ACCEPTED && r.GetCode() != "exists" {
					fail(fmt.Errorf("bench: create kv/%s: rejected: %s %s", e, r.GetCode(), r.GetMessage()))
				}
			}
		})
	}
feed:
	for i := range w.Entities {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// kvDoc wraps a document as the payload of cmd.kv.create and update.
func kvDoc(doc []byte) []byte {
	b := make([]byte, 0, len(doc)+8)
	b = append(b, `{"doc":`...)
	b = append(b, doc...)
	return append(b, '}')
}

// ReadVersion reads kv/<entity> through the shard leader (linearizable),
// as an optimistic update needs: a stale version would only conflict.
func (t *Rhizon) ReadVersion(ctx context.Context, entity string) (uint64, error) {
	resp, err := t.client().Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "kv", EntityId: entity}})
	if err != nil {
		return 0, t.classify(err)
	}
	return resp.GetVersion(), nil
}

// ConditionalUpdate submits cmd.kv.update with expected_version.
func (t *Rhizon) ConditionalUpdate(ctx context.Context, entity string, expected uint64, payload []byte) (Outcome, error) {
	return t.submit(ctx, "kv", "cmd.kv.update", entity, kvDoc(payload), &expected)
}

// Command submits cmd.counter.add {"amount":1} to counter/<entity>, or with
// CommandKV, cmd.kv.update of the payload to kv/<entity>.
func (t *Rhizon) Command(ctx context.Context, entity string, payload []byte) (Outcome, error) {
	if t.cfg.CommandActor == CommandKV {
		return t.submit(ctx, "kv", "cmd.kv.update", entity, kvDoc(payload), nil)
	}
	return t.submit(ctx, "counter", "cmd.counter.add", entity, []byte(`{"amount":1}`), nil)
}

func (t *Rhizon) submit(ctx context.Context, actorType, typ, entity string, payload []byte, expected *uint64) (Outcome, error) {
	key := t.key()
	resp, err := t.client().Submit(ctx, &pb.SubmitRequest{
		Address: &pb.Address{ActorType: actorType, EntityId: entity}, Type: typ, Payload: payload,
		IdempotencyKey: key, CommandId: key, ExpectedVersion: expected,
	})
	if err != nil {
		return 0, t.classify(err)
	}
	r := resp.GetResult()
	switch {
	case r.GetStatus() == pb.Status_STATUS_ACCEPTED:
		return OK, nil
	case r.GetReason() == pb.Reason_REASON_CONFLICT:
		return Conflict, nil
	}
	return Rejected, nil
}

// classify wraps a client error with its kind. The gateway's explicit
// "outcome unknown" (after the client's own retries with the same key) is
// UnknownOutcome; an expired deadline is Timeout even though the client
// also calls it an unknown outcome, because what the operator learns from
// it is that the target was too slow; Unavailable and the overloaded
// ResourceExhausted are Unavailable.
func (t *Rhizon) classify(err error) error {
	kind := KindOther
	switch {
	case client.IsGatewayUnknownOutcome(err):
		kind = KindUnknownOutcome
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		kind = KindTimeout
	case status.Code(err) == codes.Unavailable || client.IsNotApplied(err):
		kind = KindUnavailable
	}
	return &OpError{Kind: kind, Err: err}
}
