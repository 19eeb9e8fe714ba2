package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
)

// fakeBackend is an in-memory Backend for the gateway's input-handling tests.
// It records every command that reaches Submit; by default it behaves like
// the engine's first checks (scope, then accept with one event) so that the
// violation path looks real. The lead's end-to-end tests use the real node.
type fakeBackend struct {
	reg *actor.Registry

	mu        sync.Mutex
	submitted []actor.Command
	// submit, when set, replaces the default behaviour; n counts calls from 1.
	submit func(n int, cmd actor.Command) (actor.Result, error)

	getErr    error
	entity    engine.Entity
	applied   uint64
	history   func(after engine.Position, limit int) ([]*pb.HistoryRecord, engine.Position, bool, error)
	lastAfter engine.Position
	lastLimit int
	status    *pb.StatusResponse
	statusErr error
}

func newFakeBackend(t testing.TB) *fakeBackend {
	t.Helper()
	return &fakeBackend{reg: testRegistry(t)}
}

func (f *fakeBackend) Registry() *actor.Registry { return f.reg }

func (f *fakeBackend) ShardOf(addr actor.Address) uint32 { return uint32(len(addr.EntityID) % 4) }

func (f *fakeBackend) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	f.mu.Lock()
	f.submitted = append(f.submitted, cmd)
	n := len(f.submitted)
	fn := f.submit
	f.mu.Unlock()
	if fn != nil {
		return fn(n, cmd)
	}
	res := actor.Result{CommandID: cmd.ID, Index: uint64(10 + n)}
	if !cmd.Security.Allows(cmd.Address.Tenant, cmd.Address.Workspace) {
		res.Status, res.Reason, res.Code, res.Message = actor.StatusRejected, actor.ReasonViolation, "violation", "out of scope"
		return res, nil
	}
	res.Status, res.Version = actor.StatusAccepted, 1
	res.Events = []actor.Event{{
		ID: "e1", Type: actor.EventType(cmd.Address.ActorType, "added"), Address: cmd.Address, Version: 1,
		Payload: cmd.Payload, At: 1700000000000, CommandID: cmd.ID, TraceParent: cmd.TraceParent,
		Principal: cmd.Security.Principal, Index: res.Index, Ordinal: 1,
	}}
	res.Reply = []byte(`{"ok":true}`)
	return res, nil
}

func (f *fakeBackend) Get(ctx context.Context, addr actor.Address, stale bool) (engine.Entity, uint64, error) {
	return f.entity, f.applied, f.getErr
}

func (f *fakeBackend) History(ctx context.Context, addr actor.Address, after engine.Position, limit int, includeRejections, stale bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	f.mu.Lock()
	f.lastAfter, f.lastLimit = after, limit
	f.mu.Unlock()
	if f.history != nil {
		return f.history(after, limit)
	}
	return nil, engine.Position{}, false, nil
}

func (f *fakeBackend) Drain(context.Context, string, bool) error { return nil }

func (f *fakeBackend) Status(ctx context.Context) (*pb.StatusResponse, error) {
	if f.statusErr != nil {
		return nil, f.statusErr
	}
	if f.status != nil {
		return f.status, nil
	}
	return &pb.StatusResponse{ShardCount: 2, Shards: []*pb.ShardStatus{{Shard: 0, Leader: "n1"}, {Shard: 1, Leader: "n2"}}}, nil
}

func (f *fakeBackend) commands() []actor.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]actor.Command(nil), f.submitted...)
}

func (f *fakeBackend) reset() {
	f.mu.Lock()
	f.submitted = nil
	f.mu.Unlock()
}

// testRegistry holds two small actor types defined here rather than the
// built-ins, so these tests depend only on the gateway's contract: counter
// (verb add, with a payload validator) and lock (acquire, release and the
// engine's timer verb).
func testRegistry(t testing.TB) *actor.Registry {
	t.Helper()
	type counter struct{ Value int64 }
	c := actor.Define(actor.Definition[counter]{
		Name: "counter",
		Commands: map[string]actor.Handler[counter]{
			"add": func(_ *actor.Context, _ *counter, _ *actor.Command) ([]actor.NewEvent, error) { return nil, nil },
		},
		Validate: func(cmd *actor.Command) error {
			var p struct {
				Amount *int64 `json:"amount"`
			}
			if err := json.Unmarshal(cmd.Payload, &p); err != nil {
				return actor.Invalid("%s payload: %v", cmd.Type, err)
			}
			if p.Amount == nil || *p.Amount == 0 {
				return actor.Invalid(`amount must be a non-zero integer, e.g. {"amount": 1}`)
			}
			return nil
		},
		Apply: func(*counter, *actor.Event) error { return nil },
	})
	type lock struct{}
	noop := func(*actor.Context, *lock, *actor.Command) ([]actor.NewEvent, error) { return nil, nil }
	l := actor.Define(actor.Definition[lock]{
		Name:     "lock",
		Commands: map[string]actor.Handler[lock]{"acquire": noop, "release": noop, actor.TimerVerb: noop},
		Apply:    func(*lock, *actor.Event) error { return nil },
	})
	reg, err := actor.NewRegistry(c, l)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// The test tokens. Each is at least MinTokenLen characters.
const (
	tokAlice  = "alice-token-0123456789" // user, tenant acme, every workspace
	tokSystem = "system-token-0123456789"
	tokOps    = "ops-token-0123456789"   // service, acme/* and beta/ops
	tokAudit  = "audit-token-0123456789" // user, reads the audit streams
	tokAdmin  = "admin-token-0123456789" // role admin, no scopes
)

func testAuth(t testing.TB) *Auth {
	t.Helper()
	a, err := NewAuth("test", []TokenEntry{
		{Token: tokAlice, Principal: TokenPrincipal{ID: "alice", Type: "user"}, Scopes: []TokenScope{{Tenant: "acme", Workspace: "*"}}},
		{Token: tokSystem, Principal: TokenPrincipal{ID: "relay", Type: "system"}, Scopes: []TokenScope{{Tenant: "acme", Workspace: "*"}}},
		{Token: tokOps, Principal: TokenPrincipal{ID: "ops", Type: "service"}, Scopes: []TokenScope{{Tenant: "acme", Workspace: "*"}, {Tenant: "beta", Workspace: "ops"}}},
		{Token: tokAudit, Principal: TokenPrincipal{ID: "auditor", Type: "user"}, Scopes: []TokenScope{{Tenant: engine.AuditTenant, Workspace: engine.AuditWorkspace}}},
		{Token: tokAdmin, Role: "admin", Principal: TokenPrincipal{ID: "root", Type: "user"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// harness is a gateway served over real gRPC on 127.0.0.1:0 and over HTTP
// through httptest.
type harness struct {
	be   *fakeBackend
	srv  *Server
	gw   pb.GatewayClient
	conn *grpc.ClientConn
	http *httptest.Server
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	be := newFakeBackend(t)
	srv, err := New(Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NodeID: "n1", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions()...)
	srv.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.HTTPHandler())
	t.Cleanup(func() {
		hs.Close()
		conn.Close()
		gs.Stop()
	})
	return &harness{be: be, srv: srv, gw: pb.NewGatewayClient(conn), conn: conn, http: hs}
}

// withToken returns ctx carrying token as gRPC bearer metadata ("" sends none).
func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", fmt.Sprintf("Bearer %s", token))
}
