package client

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

func TestDialClusterRoutingDefault(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
		opts  []Option
		want  bool
	}{
		{"one address", []string{"127.0.0.1:1"}, nil, false},
		{"one address twice", []string{"127.0.0.1:1", "127.0.0.1:1"}, nil, false},
		{"several addresses", []string{"127.0.0.1:1", "127.0.0.1:2"}, nil, true},
		{"several, off", []string{"127.0.0.1:1", "127.0.0.1:2"}, []Option{WithLeaderRouting(false)}, false},
		{"one, on", []string{"127.0.0.1:1"}, []Option{WithLeaderRouting(true)}, true},
	} {
		c, err := DialCluster(tc.addrs, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.r != nil; got != tc.want {
			t.Errorf("%s: routing %v, want %v", tc.name, got, tc.want)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: close: %v", tc.name, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("%s: second close: %v", tc.name, err)
		}
	}
}

// TestInstallTakesTheLeadersOfStatus: a replica that leads (highest term
// first) beats a follower's view; a follower's view fills a shard whose
// leader did not report; a leader on a node not alive is left out.
func TestInstallTakesTheLeadersOfStatus(t *testing.T) {
	c, err := DialCluster([]string{"127.0.0.1:1", "127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.r.install(&pb.StatusResponse{
		ShardCount: 4,
		Nodes: []*pb.NodeStatus{
			{NodeId: "n1", State: "alive", GrpcAddr: "127.0.0.1:1"},
			{NodeId: "n2", State: "alive", GrpcAddr: "127.0.0.1:2"},
			{NodeId: "n3", State: "dead", GrpcAddr: "127.0.0.1:3"},
		},
		Shards: []*pb.ShardStatus{
			{Shard: 0, NodeId: "n1", Role: "Follower", Leader: "n2", Term: 9},
			{Shard: 0, NodeId: "n1", Role: "Leader", Leader: "n1", Term: 3}, // stale leader
			{Shard: 0, NodeId: "n2", Role: "Leader", Leader: "n2", Term: 4},
			{Shard: 1, NodeId: "n1", Role: "Follower", Leader: "n2", Term: 5},
			{Shard: 2, NodeId: "n3", Role: "Leader", Leader: "n3", Term: 5},
			{Shard: 3, NodeId: "n1", Role: "Candidate", Term: 7},
			{Shard: 9, NodeId: "n1", Role: "Leader", Term: 7}, // beyond the count
		},
	})
	tb := c.r.table.Load()
	if tb == nil || tb.count != 4 {
		t.Fatalf("table %+v", tb)
	}
	if want := []string{"n2", "n2", "", ""}; !slices.Equal(tb.nodes, want) {
		t.Fatalf("leaders %v, want %v", tb.nodes, want)
	}
	if tb.leaders[0] != c.seeds[1] || tb.leaders[2] != nil {
		t.Fatal("leaders do not share the seeds' connections")
	}
	// A Status of no shards keeps the table.
	c.r.install(&pb.StatusResponse{})
	if c.r.table.Load() != tb {
		t.Fatal("an empty Status replaced the table")
	}
}

func TestResolveUsesTheLearnedScope(t *testing.T) {
	c, err := DialCluster([]string{"127.0.0.1:1", "127.0.0.1:2"}, WithTenant("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.fillAddress(&pb.Address{ActorType: "kv", EntityId: "e"})
	if _, ok := c.r.resolve(addr); ok {
		t.Fatal("resolved an address without a workspace before learning the default")
	}
	c.r.learnScope(addr, "t/ws")
	c.r.learnScope(&pb.Address{}, "bogus") // no '/': ignored
	got, ok := c.r.resolve(addr)
	if want := (actor.Address{Tenant: "t", Workspace: "ws", ActorType: "kv", EntityID: "e"}); !ok || got != want {
		t.Fatalf("resolved %+v %v, want %+v", got, ok, want)
	}
	if _, ok := c.r.resolve(&pb.Address{ActorType: "kv", EntityId: "e"}); ok {
		t.Fatal("a scope learned for tenant t was used for requests without a tenant")
	}
}

// TestDialClusterPassesOverADeadAddress: one of the addresses refuses
// connections; every call still succeeds (the failed attempt is retried on
// another address).
func TestDialClusterPassesOverADeadAddress(t *testing.T) {
	be, addr := serve(t, func(_ int, cmd actor.Command) (actor.Result, error) {
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	c, err := DialCluster([]string{dead, addr}, WithToken(token), WithRetryBackoff(time.Millisecond, 5*time.Millisecond),
		WithLeaderRouting(false), WithConnsPerNode(2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 20 {
		if _, err := c.Submit(context.Background(), addReq()); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(be.commands()); n != 20 {
		t.Fatalf("%d commands reached the gateway, want 20", n)
	}
}

// TestRefreshBacksOffWhileStatusIsUseless: a gateway whose Status gives no
// routing table (here: no shard count; in life, a node that cannot answer)
// is not polled at the pace of the hints.
func TestRefreshBacksOffWhileStatusIsUseless(t *testing.T) {
	be, addr := serve(t, nil)
	c, err := DialCluster([]string{addr}, WithToken(token), WithLeaderRouting(true), WithRouteRefresh(400*time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.r.run()
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		c.r.refreshSoon()
		time.Sleep(time.Millisecond) // a hint a millisecond: the load the backoff must absorb
	}
	// 10, 20, 40, ... 400 ms: about 8 in a second, not 100.
	if n := be.status.Load(); n < 2 || n > 20 {
		t.Fatalf("%d Status calls in a second of hints", n)
	}
	if c.r.table.Load() != nil {
		t.Fatal("a Status without shards became a table")
	}
}
