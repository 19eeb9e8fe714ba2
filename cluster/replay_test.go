package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/testkit"
)

// Replay asked of a follower runs on the shard's leader (forwarded over the
// internal API; real Raft, Badger and gRPC), re-executes the live shard's
// log up to the leader's applied index and finds it identical, scoped to an
// entity or the whole shard; a second replay of a shard already replaying
// on that node is ResourceExhausted; a shard that does not exist is
// InvalidArgument.
func TestNode_ReplayRunsOnAReplicaHolderTheLeaderFirst(t *testing.T) {
	const shards = 2
	_, nodes := startProxiedCluster(t, shards)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	addr := actor.Address{Tenant: "a", Workspace: "w", ActorType: "counter", EntityID: "r1"}
	id := actor.ShardOf(addr, shards)
	sec := actor.Security{Principal: actor.Principal{ID: "alice", Type: actor.PrincipalUser}, Scopes: []actor.Scope{{Tenant: "a", Workspace: "*"}}}
	var last uint64
	for i := range 6 {
		cmd := actor.Command{ID: fmt.Sprint("rc", i), Type: "cmd.counter.add", Address: addr, IdempotencyKey: fmt.Sprint("rk", i),
			Payload: []byte(`{"amount":2}`), Security: sec}
		if i == 5 {
			stale := uint64(1)
			cmd.ExpectedVersion = &stale // a conflict, recorded as a rejection
		}
		res, err := nodes[i%len(nodes)].Node.Node.Submit(ctx, cmd)
		if err != nil {
			t.Fatal(err)
		}
		last = res.Index
	}
	leader, follower := -1, -1
	testkit.EventuallyNil(t, 30*time.Second, "a leader of the shard", func() error {
		leader, follower = -1, -1
		for i, pn := range nodes {
			for _, sh := range pn.Node.Node.Shards() {
				if sh.ID() == id && sh.IsLeader() {
					leader = i
				} else if sh.ID() == id && follower < 0 {
					follower = i
				}
			}
		}
		if leader < 0 || follower < 0 {
			return fmt.Errorf("shard %d: leader %d follower %d", id, leader, follower)
		}
		return nil
	})
	ln, fn := nodes[leader].Node.Node, nodes[follower].Node.Node

	entity := &pb.ReplayRequest{Scope: &pb.ReplayRequest_Address{Address: pb.FromAddress(addr)}}
	rep, err := fn.Replay(ctx, entity)
	if err != nil {
		t.Fatal(err)
	}
	if rep.GetNodeId() != ln.ID() {
		t.Fatalf("replay asked of %s ran on %s, want the leader %s", fn.ID(), rep.GetNodeId(), ln.ID())
	}
	// At least the 6 commands: a submit the router retried (its forward
	// timed out on a loaded machine) is in the log twice, the second a
	// replay of the first's result.
	if !rep.GetIdentical() || rep.GetDivergence() != nil || rep.GetShard() != id || rep.GetTo() < last ||
		rep.GetCompared() < 6 || rep.GetRecordedHash() != rep.GetReplayedHash() || strings.Trim(rep.GetRecordedHash(), "0") == "" {
		t.Fatalf("entity replay: %v, want identical to at least index %d with the 6 commands compared", rep, last)
	}
	// The replay stopped where the leader was when it started: its hash
	// is the one the leader's replica recorded there (the store went on).
	for _, sh := range ln.Shards() {
		if m := sh.Meta(); sh.ID() == id && (m.Index < rep.GetTo() || (m.Index == rep.GetTo() && fmt.Sprintf("%x", m.Hash) != rep.GetRecordedHash())) {
			t.Fatalf("leader at %d hash %x; replay to %d recorded %s", m.Index, m.Hash, rep.GetTo(), rep.GetRecordedHash())
		}
	}

	whole := &pb.ReplayRequest{Scope: &pb.ReplayRequest_Shard{Shard: id}, Tenant: "a"}
	rep, err = fn.Replay(ctx, whole)
	if err != nil || !rep.GetIdentical() || rep.GetNodeId() != ln.ID() || rep.GetCompared() < 6 || rep.GetEntries() == 0 {
		t.Fatalf("shard replay: %v %v", rep, err)
	}

	// One replay per shard per node: the leader is busy with this shard.
	release, err := ln.HoldReplay(id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fn.Replay(ctx, whole)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "already running") {
		release()
		t.Fatalf("a replay of a shard replaying on its leader: %v, want ResourceExhausted", err)
	}
	release()
	if rep, err := fn.Replay(ctx, whole); err != nil || !rep.GetIdentical() {
		t.Fatalf("replay once the slot is free: %v %v", rep, err)
	}

	bad := &pb.ReplayRequest{Scope: &pb.ReplayRequest_Shard{Shard: shards}}
	if _, err := fn.Replay(ctx, bad); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("replay of shard %d of %d: %v, want InvalidArgument", shards, shards, err)
	}
	if _, err := fn.Replay(ctx, &pb.ReplayRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("replay without a scope: %v, want InvalidArgument", err)
	}
}
