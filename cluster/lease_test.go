package cluster_test

import (
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// TestNode_LinearizableReadsGoByLeaseOverTheMux: on a 3-node cluster (the
// raft mux, heartbeats coalesced across shards) the shard leaders confirm
// most linearizable reads by their lease, not by a heartbeat round each.
func TestNode_LinearizableReadsGoByLeaseOverTheMux(t *testing.T) {
	// Raft's default timeouts: a ~570 ms lease that a loaded machine's
	// late heartbeats do not let lapse.
	tmpl := testShardConfig()
	tmpl.HeartbeatTimeout, tmpl.ElectionTimeout, tmpl.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: 8, ShardTemplate: tmpl, Tokens: listTokens,
		Registry: func(int) *actor.Registry { return userRegistry(t, "user:age") },
	})
	c.WaitSettled(t)
	a := dialList(t, c.Nodes[0].Addr, tokenA, client.WithTenant("a"), client.WithWorkspace("w"))
	// Each List reads every shard through its leader, linearizably.
	for range 40 {
		if _, err := a.List(ctx(t), &pb.ListRequest{ActorType: "user"}); err != nil {
			t.Fatal(err)
		}
	}
	var lease, round uint64
	for _, n := range c.Nodes {
		for _, s := range n.Node.Shards() {
			l, r := s.ReadCounts()
			lease, round = lease+l, round+r
		}
	}
	if lease+round < 320 || lease < 3*round {
		t.Fatalf("320 shard reads: %d by lease, %d by a heartbeat round", lease, round)
	}
	t.Logf("%d shard reads by lease, %d by a heartbeat round", lease, round)
}
