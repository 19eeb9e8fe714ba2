package bench

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

const testToken = "bench-test-token-0123456789"

// startNode runs a real single node (Raft, Badger on disk, 4 shards) behind
// a real gRPC gateway on 127.0.0.1 and returns its address.
func startNode(t testing.TB) string {
	t.Helper()
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 1, Shards: 4, Graceful: true,
		Tokens: []gateway.TokenEntry{{
			Token: testToken, Principal: gateway.TokenPrincipal{ID: "bench", Type: "service"},
			Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}},
		}},
	})
	return c.Nodes[0].Addr
}

func TestRhizon_EndToEndAgainstARealNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	addr := startNode(t)
	// Three connections over a two-address list: the round-robin wraps.
	target, err := NewRhizon(RhizonConfig{Addrs: []string{addr, addr}, Token: testToken, Conns: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, name := range []string{"w1-occ", "w1-command"} {
		w := testWorkload(t, name, 200)
		for range 2 { // a second setup against the same server is a no-op
			if err := target.Setup(ctx, w); err != nil {
				t.Fatalf("%s setup: %v", name, err)
			}
		}
		res, err := Run(ctx, target, Config{Workload: w, Concurrency: 8, Warmup: 200 * time.Millisecond, Duration: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d ops, %.0f ops/s, p50 %.2fms p99 %.2fms, %d conflicts", name, res.Ops, res.Throughput, res.Latency.P50, res.Latency.P99, res.Conflicts)
		if res.Ops == 0 || res.OK == 0 || res.ErrorsTotal() != 0 || res.Rejected != 0 {
			t.Fatalf("%s: ops %d ok %d rejected %d errors %v %v", name, res.Ops, res.OK, res.Rejected, res.Errors, res.ErrorSamples)
		}
		if w.Op == OpCommand && res.Conflicts != 0 {
			t.Fatalf("%s: %d conflicts without an expected version", name, res.Conflicts)
		}
	}

	// The updates landed: a kv document's version moved past its create.
	c, err := client.Dial(addr, client.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	moved := false
	w := testWorkload(t, "w1-occ", 200)
	for i := range w.Entities {
		resp, err := c.Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "kv", EntityId: w.Entity(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Found {
			t.Fatalf("kv/%s was not created by setup", w.Entity(i))
		}
		moved = moved || resp.Version > 1
	}
	if !moved {
		t.Fatal("no kv document was updated")
	}

	t.Run("CommandKVNeedsAndGetsDocuments", func(t *testing.T) { testCommandKV(t, addr) })
	t.Run("BadTokenFailsSetupAndIsClassified", func(t *testing.T) { testBadToken(t, addr) })
	t.Run("RouteAny", func(t *testing.T) { testRouteAny(t, addr) })
	t.Run("WasmCounter", func(t *testing.T) { testWasmCounter(t, addr) })
}

// testRouteAny runs the round-robin client: one client per connection, no
// leader routing; the end-to-end test above used the default, RouteLeader.
func testRouteAny(t *testing.T, addr string) {
	target, err := NewRhizon(RhizonConfig{Addrs: []string{addr, addr}, Token: testToken, Route: RouteAny})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if len(target.clients) != 2*DefaultConnsPerAddr {
		t.Fatalf("%d clients, want one per connection", len(target.clients))
	}
	for i := range 10 {
		if out, err := target.Command(context.Background(), fmt.Sprintf("any-%d", i), nil); err != nil || out != OK {
			t.Fatalf("command: %v %v", out, err)
		}
	}
}

func testCommandKV(t *testing.T, addr string) {
	target, err := NewRhizon(RhizonConfig{Addrs: []string{addr}, Token: testToken, CommandActor: CommandKV})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	// Its own entities: the end-to-end runs above moved the shared ones.
	w := testWorkload(t, "w1-command", 20)
	w.EntityPrefix = "kvcmd-"
	ctx := context.Background()
	if err := target.Setup(ctx, w); err != nil {
		t.Fatal(err)
	}
	out, err := target.Command(ctx, w.Entity(3), w.Payload(9))
	if err != nil || out != OK {
		t.Fatalf("kv command: %v %v", out, err)
	}
	v, err := target.ReadVersion(ctx, w.Entity(3))
	if err != nil || v != 2 {
		t.Fatalf("version after create + update: %d %v", v, err)
	}
	if out, err := target.ConditionalUpdate(ctx, w.Entity(3), 1, w.Payload(10)); err != nil || out != Conflict {
		t.Fatalf("stale expected version: %v %v, want conflict", out, err)
	}
}

func testBadToken(t *testing.T, addr string) {
	target, err := NewRhizon(RhizonConfig{Addrs: []string{addr}, Token: "not-the-token-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := target.Setup(context.Background(), testWorkload(t, "w1-occ", 10)); err == nil {
		t.Fatal("setup with a bad token succeeded")
	}
	_, err = target.Command(context.Background(), "x", nil)
	if KindOf(err) != KindOther || status.Code(errors.Unwrap(err)) != codes.Unauthenticated {
		t.Fatalf("bad token: %v (kind %v)", err, KindOf(err))
	}
}

func TestRhizon_Classify(t *testing.T) {
	r := &Rhizon{}
	cases := []struct {
		err  error
		want ErrorKind
	}{
		{status.Error(codes.Unavailable, "outcome unknown: leadership lost"), KindUnknownOutcome},
		{status.Error(codes.Unavailable, "no leader"), KindUnavailable},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), KindTimeout},
		{context.DeadlineExceeded, KindTimeout},
		{status.Error(codes.InvalidArgument, "bad"), KindOther},
	}
	for _, c := range cases {
		if got := KindOf(r.classify(c.err)); got != c.want {
			t.Errorf("%v: kind %v, want %v", c.err, got, c.want)
		}
	}
	if _, err := NewRhizon(RhizonConfig{}); err == nil {
		t.Error("no address accepted")
	}
	if _, err := NewRhizon(RhizonConfig{Addrs: []string{"x:1"}, CommandActor: "lock"}); err == nil {
		t.Error("unknown command actor accepted")
	}
	if _, err := NewRhizon(RhizonConfig{Addrs: []string{"x:1"}, Route: "nearest"}); err == nil {
		t.Error("unknown route accepted")
	}
	// The default is leader routing: one client holding the connections.
	r, err := NewRhizon(RhizonConfig{Addrs: []string{"x:1", "y:1", "z:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.cfg.Route != RouteLeader || len(r.clients) != 1 {
		t.Errorf("default route %q with %d clients, want %s with one", r.cfg.Route, len(r.clients), RouteLeader)
	}
}
