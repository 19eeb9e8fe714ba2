package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/shard"
)

// scriptedBackend is a gateway.Backend whose Submit follows a script; it
// records every command so the test can compare attempts.
type scriptedBackend struct {
	reg    *actor.Registry
	mu     sync.Mutex
	cmds   []actor.Command
	script func(n int, cmd actor.Command) (actor.Result, error)
	status atomic.Int64 // Status calls
	// table, when set, is what Status answers (a routing client's table).
	table atomic.Pointer[pb.StatusResponse]
}

func (b *scriptedBackend) Registry() *actor.Registry                 { return b.reg }
func (b *scriptedBackend) ShardOf(actor.Address) uint32              { return 0 }
func (b *scriptedBackend) Drain(context.Context, string, bool) error { return nil }

func (b *scriptedBackend) Status(context.Context) (*pb.StatusResponse, error) {
	b.status.Add(1)
	if st := b.table.Load(); st != nil {
		return st, nil
	}
	return &pb.StatusResponse{}, nil
}
func (b *scriptedBackend) Get(context.Context, actor.Address, bool) (engine.Entity, uint64, error) {
	return engine.Entity{Version: 1, State: []byte(`{}`)}, 1, nil
}
func (b *scriptedBackend) History(context.Context, actor.Address, engine.Position, int, bool, bool) ([]*pb.HistoryRecord, engine.Position, bool, error) {
	return nil, engine.Position{}, false, nil
}
func (b *scriptedBackend) Submit(_ context.Context, cmd actor.Command) (actor.Result, error) {
	b.mu.Lock()
	b.cmds = append(b.cmds, cmd)
	n := len(b.cmds)
	b.mu.Unlock()
	return b.script(n, cmd)
}

func (b *scriptedBackend) commands() []actor.Command {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]actor.Command(nil), b.cmds...)
}

const token = "client-test-token-0123"

func serve(t *testing.T, script func(n int, cmd actor.Command) (actor.Result, error)) (*scriptedBackend, string) {
	t.Helper()
	return serveWith(t, script)
}

// serveWith is serve with more gRPC server options (interceptors).
func serveWith(t *testing.T, script func(n int, cmd actor.Command) (actor.Result, error), opts ...grpc.ServerOption) (*scriptedBackend, string) {
	t.Helper()
	counter := actor.Define(actor.Definition[struct{}]{
		Name:     "counter",
		Commands: map[string]actor.Handler[struct{}]{"add": func(*actor.Context, *struct{}, *actor.Command) ([]actor.NewEvent, error) { return nil, nil }},
		Apply:    func(*struct{}, *actor.Event) error { return nil },
	})
	reg, err := actor.NewRegistry(counter)
	if err != nil {
		t.Fatal(err)
	}
	be := &scriptedBackend{reg: reg, script: script}
	auth, err := gateway.NewAuth("test", []gateway.TokenEntry{{
		Token: token, Principal: gateway.TokenPrincipal{ID: "dev", Type: "user"},
		Scopes: []gateway.TokenScope{{Tenant: "dev", Workspace: "*"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{Backend: be, Auth: auth, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(gateway.ServerOptions(), opts...)...)
	srv.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return be, lis.Addr().String()
}

func dial(t *testing.T, addr string, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(addr, append([]Option{WithToken(token), WithRetryBackoff(time.Millisecond, 5*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addReq() *pb.SubmitRequest {
	return &pb.SubmitRequest{
		Address: &pb.Address{ActorType: "counter", EntityId: "c1"},
		Type:    "cmd.counter.add", Payload: []byte(`{"amount":1}`),
	}
}

// TestSubmitRetriesWithSameKey: two unknown outcomes, then the result. All
// three attempts must carry one idempotency key and one command id, or a
// retry could apply the command twice.
func TestSubmitRetriesWithSameKey(t *testing.T) {
	be, addr := serve(t, func(n int, cmd actor.Command) (actor.Result, error) {
		if n <= 2 {
			return actor.Result{}, shard.ErrUnknownOutcome
		}
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1, Duplicate: true}, nil
	})
	c := dial(t, addr, WithTenant("dev"), WithWorkspace("w1"))
	req := addReq()
	resp, err := c.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetResult().GetDuplicate() {
		t.Fatalf("response %v", resp)
	}
	cmds := be.commands()
	if len(cmds) != 3 {
		t.Fatalf("%d attempts, want 3", len(cmds))
	}
	for i, cmd := range cmds {
		if cmd.IdempotencyKey == "" || cmd.IdempotencyKey != cmds[0].IdempotencyKey || cmd.ID != cmds[0].ID {
			t.Fatalf("attempt %d: key %q id %q, first had key %q id %q", i+1, cmd.IdempotencyKey, cmd.ID, cmds[0].IdempotencyKey, cmds[0].ID)
		}
		if cmd.Address.Tenant != "dev" || cmd.Address.Workspace != "w1" {
			t.Fatalf("attempt %d address %+v: WithTenant/WithWorkspace not applied", i+1, cmd.Address)
		}
	}
	if req.IdempotencyKey != cmds[0].IdempotencyKey || req.CommandId != cmds[0].ID {
		t.Fatalf("req not filled with the key it was sent with: %v", req)
	}
	if req.Address.Tenant != "" {
		t.Fatal("Submit changed the caller's address")
	}
}

func TestSubmitRetriesExhausted(t *testing.T) {
	be, addr := serve(t, func(int, actor.Command) (actor.Result, error) { return actor.Result{}, shard.ErrUnknownOutcome })
	c := dial(t, addr, WithRetries(2))
	req := addReq()
	req.IdempotencyKey = "mine"
	_, err := c.Submit(context.Background(), req)
	if !IsUnknownOutcome(err) || !IsGatewayUnknownOutcome(err) || IsNotApplied(err) {
		t.Fatalf("err %v: want a gateway unknown outcome", err)
	}
	if n := len(be.commands()); n != 3 {
		t.Fatalf("%d attempts, want 1 + 2 retries", n)
	}
	if be.commands()[2].IdempotencyKey != "mine" {
		t.Fatal("the caller's key was replaced")
	}
}

func TestSubmitDoesNotRetryPermanentErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		n    int
	}{
		{"halted", shard.ErrHalted, codes.Internal, 1},
		{"not leader is retried", shard.ErrNotLeader, codes.Unavailable, 4},
		{"overloaded is retried", shard.ErrOverloaded, codes.ResourceExhausted, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, addr := serve(t, func(int, actor.Command) (actor.Result, error) { return actor.Result{}, tc.err })
			c := dial(t, addr)
			_, err := c.Submit(context.Background(), addReq())
			if status.Code(err) != tc.code {
				t.Fatalf("err %v, want %v", err, tc.code)
			}
			if n := len(be.commands()); n != tc.n {
				t.Fatalf("%d attempts, want %d", n, tc.n)
			}
			if tc.code != codes.Internal && (!IsNotApplied(err) || IsUnknownOutcome(err)) {
				t.Fatalf("err %v should be not-applied", err)
			}
		})
	}

	// Input errors never reach the backend and are not retried.
	be, addr := serve(t, nil)
	c := dial(t, addr)
	req := addReq()
	req.Type = "cmd.counter.nope"
	if _, err := c.Submit(context.Background(), req); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("err %v", err)
	}
	if len(be.commands()) != 0 {
		t.Fatal("bad input reached the backend")
	}
}

func TestReadsAndStatus(t *testing.T) {
	_, addr := serve(t, nil)
	c := dial(t, addr)
	g, err := c.Get(context.Background(), &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}})
	if err != nil || !g.Found {
		t.Fatalf("get %v %v", g, err)
	}
	if _, err := c.History(context.Background(), &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	anon := dial(t, addr, WithToken(""))
	if _, err := anon.Status(context.Background()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("status without a token: %v", err)
	}
}

func TestDialValidatesOptions(t *testing.T) {
	for name, opt := range map[string]Option{
		"negative retries":  WithRetries(-1),
		"zero backoff":      WithRetryBackoff(0, time.Second),
		"max below initial": WithRetryBackoff(time.Second, time.Millisecond),
		"token with space":  WithToken("a b"),
		"no conns per node": WithConnsPerNode(0),
		"zero route gap":    WithRouteRefresh(time.Second, 0),
		"refresh below gap": WithRouteRefresh(time.Millisecond, time.Second),
	} {
		if _, err := Dial("127.0.0.1:1", opt); err == nil {
			t.Errorf("%s: Dial accepted it", name)
		}
	}
	if _, err := Dial(""); err == nil {
		t.Error("Dial accepted an empty address")
	}
	if _, err := DialCluster(nil); err == nil {
		t.Error("DialCluster accepted no address")
	}
	if _, err := DialCluster([]string{"127.0.0.1:1", ""}); err == nil {
		t.Error("DialCluster accepted an empty address")
	}
}

// TestErrorContractMatchesGateway keeps the client's copies of the gateway's
// error constants honest.
func TestErrorContractMatchesGateway(t *testing.T) {
	for _, p := range [][2]string{
		{errorDomain, gateway.ErrorDomain},
		{reasonOutcomeUnknown, gateway.ReasonOutcomeUnknown},
		{outcomeUnknownPrefix, gateway.OutcomeUnknownPrefix},
		{trailerLeader, gateway.LeaderTrailer},
		{trailerLeaderAddr, gateway.LeaderAddrTrailer},
		{trailerScope, gateway.ScopeTrailer},
	} {
		if p[0] != p[1] {
			t.Errorf("client has %q, gateway %q", p[0], p[1])
		}
	}
}

func TestIsUnknownOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("x"), false},
		{context.DeadlineExceeded, true},
		{status.Error(codes.DeadlineExceeded, "x"), true},
		{status.Error(codes.Unavailable, "outcome unknown: x"), true},
		{status.Error(codes.Unavailable, "connection reset"), true},
		{status.Error(codes.InvalidArgument, "outcome unknown: x"), false},
	} {
		if got := IsUnknownOutcome(tc.err); got != tc.want {
			t.Errorf("IsUnknownOutcome(%v) = %v", tc.err, got)
		}
	}
}
