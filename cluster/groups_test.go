package cluster_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// TestRaftGroups_ThreeNodesCarryEightShardsInThreeGroups: 8 shards in 3
// Raft groups on 3 nodes (real Raft over TCP, Badger on disk). Each node
// runs 3 replicas, not 8, each carrying the shards congruent to its group;
// commands to entities of every shard apply once, read back linearizably on
// every node, and each group's replicas agree on their state hash. Status
// keeps a row per shard with its group's Raft facts, and a group survives
// the loss of its leader's node.
func TestRaftGroups_ThreeNodesCarryEightShardsInThreeGroups(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: 8, RaftGroups: 3, ShardTemplate: testShardConfig(),
		Tokens: []gateway.TokenEntry{{Token: tokenA, Principal: gateway.TokenPrincipal{ID: "alice", Type: "user"},
			Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}}}},
	})
	c.WaitSettled(t)
	for _, n := range c.Nodes {
		var got [][]uint32
		for _, s := range n.Node.Shards() {
			got = append(got, s.Members())
		}
		if want := [][]uint32{{0, 3, 6}, {1, 4, 7}, {2, 5}}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s replicas carry %v, want %v", n.ID, got, want)
		}
	}

	cl, err := client.DialCluster(c.Addrs(), client.WithToken(tokenA))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ids := make([]string, 48)
	seen := map[uint32]bool{}
	for i := range ids {
		ids[i] = fmt.Sprintf("g%d", i)
		seen[actor.ShardOf(actor.Address{Tenant: "a", Workspace: "main", ActorType: "counter", EntityID: ids[i]}, 8)] = true
	}
	if len(seen) != 8 {
		t.Fatalf("the entities cover shards %v, want all 8", seen)
	}
	add := func(round int) {
		t.Helper()
		for _, id := range ids {
			req := submit("counter", id, "add", fmt.Sprintf("r%d", round), `{"amount":1}`)
			req.Address.Tenant, req.Address.Workspace = "a", "main"
			resp, err := cl.Submit(ctx(t), req)
			if err != nil {
				t.Fatalf("round %d, %s: %v", round, id, err)
			}
			if r := resp.Result; r.Status != pb.Status_STATUS_ACCEPTED || r.Version != uint64(round) {
				t.Fatalf("round %d, %s: %v version %d, want accepted at %d", round, id, r.Status, r.Version, round)
			}
		}
	}
	add(1)
	add(2)
	// Every node reads every entity linearizably at version 2.
	for _, n := range c.Nodes {
		nc, err := client.Dial(n.Addr, client.WithToken(tokenA))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			resp, err := nc.Get(ctx(t), &pb.GetRequest{Address: &pb.Address{Tenant: "a", Workspace: "main", ActorType: "counter", EntityId: id}})
			if err != nil || resp.GetVersion() != 2 {
				t.Fatalf("%s reads %s: version %d, %v; want 2", n.ID, id, resp.GetVersion(), err)
			}
		}
		nc.Close()
	}

	st, err := cl.Status(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.ShardCount != 8 || st.RaftGroups != 3 || len(st.Shards) != 24 {
		t.Fatalf("status: %d shards, %d groups, %d rows; want 8, 3 and a row per shard replica (24)", st.ShardCount, st.RaftGroups, len(st.Shards))
	}
	for _, s := range st.Shards {
		if s.RaftGroup != s.Shard%3 {
			t.Errorf("status row of shard %d on %s names group %d, want %d", s.Shard, s.NodeId, s.RaftGroup, s.Shard%3)
		}
	}
	// The replicas of each group apply the same log to the same state.
	testkit.Eventually(t, 10*time.Second, "each group's replicas at one index and state hash", func() (bool, string) {
		for g := range uint32(3) {
			var seen []string
			for _, n := range c.Nodes {
				for _, s := range n.Node.Shards() {
					if s.ID() == g {
						m := s.Meta()
						seen = append(seen, fmt.Sprintf("%d/%x", m.Index, m.Hash[:6]))
					}
				}
			}
			if len(seen) != 3 || seen[0] != seen[1] || seen[1] != seen[2] {
				return false, fmt.Sprintf("group %d: %v", g, seen)
			}
		}
		return true, ""
	})

	// The node leading group 0 dies: another replica takes over, and the
	// group's shards take commands again.
	leader, err := c.Leader(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyNil(t, 15*time.Second, "group 0 led again", func() error { _, err := c.Leader(0); return err })
	var live []string
	for _, n := range c.Live() {
		live = append(live, n.Addr)
	}
	cl2, err := client.DialCluster(live, client.WithToken(tokenA))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl2.Close() })
	cl = cl2
	add(3)
	h, err := cl.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{Tenant: "a", Workspace: "main", ActorType: "counter", EntityId: ids[0]}})
	if err != nil || len(h.GetRecords()) != 3 {
		t.Fatalf("history of %s: %d records, %v; want 3", ids[0], len(h.GetRecords()), err)
	}
}

// TestRaftGroups_MoreGroupsThanShardsIsRefused: a group carries at least one
// shard, and the refusal says what to set.
func TestRaftGroups_MoreGroupsThanShardsIsRefused(t *testing.T) {
	_, err := cluster.Open(cluster.Config{NodeID: "n1", DataDir: t.TempDir(), Shards: 8, RaftGroups: 9, Registry: builtin.Registry()})
	if err == nil || !strings.Contains(err.Error(), "set at most 8") {
		t.Fatalf("Open with 9 groups for 8 shards: %v, want a refusal naming the limit", err)
	}
}

// TestRaftGroups_ListReadsEachGroupOnceAndNamesEachItemsShard: a List over 6
// shards in 2 Raft groups reads each group's store once (2 read points, not
// 6: a group's store holds all of its shards' rows, so reading it per shard
// would repeat them), finds every document once, and names each item's own
// shard, not its group's.
func TestRaftGroups_ListReadsEachGroupOnceAndNamesEachItemsShard(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 1, Shards: 6, RaftGroups: 2, ShardTemplate: testShardConfig(), Tokens: listTokens,
		Registry: func(int) *actor.Registry { return userRegistry(t, "user:age") },
	})
	a := dialList(t, c.Nodes[0].Addr, tokenA, client.WithTenant("a"), client.WithWorkspace("w"))
	var want []string
	for i := range 40 {
		id := fmt.Sprintf("u%02d", i)
		if _, err := a.Submit(ctx(t), userCreate(id, i%10)); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	resp, err := a.List(ctx(t), &pb.ListRequest{ActorType: "user", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	shards := map[uint32]bool{}
	var got []string
	for _, it := range resp.GetItems() {
		got = append(got, it.GetId())
		addr := actor.Address{Tenant: "a", Workspace: "w", ActorType: "user", EntityID: it.GetId()}
		if s := actor.ShardOf(addr, 6); it.GetShard() != s {
			t.Errorf("item %s names shard %d, want its own, %d", it.GetId(), it.GetShard(), s)
		}
		shards[it.GetShard()] = true
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || resp.GetCount() != 40 || len(resp.GetAppliedIndexes()) != 2 || len(shards) < 4 {
		t.Fatalf("list: %v (count %d, read points %v, shards %v); want the 40 ids once, from 2 groups", got, resp.GetCount(), resp.GetAppliedIndexes(), shards)
	}
	if got := pageAll(t, a, &pb.ListRequest{ActorType: "user", Limit: 7}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paged list: %v", got)
	}
}

// TestRaftGroups_ViolationsLandInTheOffendersAuditStream: with 6 shards in 2
// Raft groups, a command across tenants is refused and recorded in the
// offender's audit stream (engine.AuditAddress of the group that applied
// it, an address that hashes into that group), where an operator reads it;
// the target's history holds none of it.
func TestRaftGroups_ViolationsLandInTheOffendersAuditStream(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 1, Shards: 6, RaftGroups: 2, ShardTemplate: testShardConfig(),
		Tokens: append(slices.Clone(listTokens), gateway.TokenEntry{Token: tokenAudit, Principal: gateway.TokenPrincipal{ID: "auditor", Type: "user"},
			Scopes: []gateway.TokenScope{{Tenant: engine.AuditTenant, Workspace: engine.AuditWorkspace}}}),
	})
	addr := c.Nodes[0].Addr
	b := dialList(t, addr, tokenB)
	if _, err := b.Submit(ctx(t), submit("counter", "secret", "add", "k1", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	req := submit("counter", "secret", "add", "attack", `{"amount":100}`)
	req.Address.Tenant, req.Address.Workspace = "b", "main"
	if _, err := dialList(t, addr, tokenA).Submit(ctx(t), req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("submit across tenants: %v, want PermissionDenied", err)
	}
	h, err := b.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "secret"}, IncludeRejections: true})
	if err != nil || len(h.GetRecords()) != 1 {
		t.Fatalf("target's history: %d records, %v; want its one event", len(h.GetRecords()), err)
	}
	auditor := dialList(t, addr, tokenAudit)
	violations := 0
	for s := range uint32(6) {
		h, err := auditor.History(ctx(t), &pb.HistoryRequest{Address: pb.FromAddress(engine.AuditAddress("alice", s, 6)), IncludeRejections: true})
		if err != nil {
			t.Fatalf("audit stream on shard %d: %v", s, err)
		}
		for _, r := range h.GetRecords() {
			if rj := r.GetRejection(); rj != nil && rj.Type == engine.ViolationEventType && rj.GetAddress().GetEntityId() == "secret" {
				violations++
			}
		}
	}
	if violations != 1 {
		t.Fatalf("alice's audit streams hold %d violations, want 1", violations)
	}
}
