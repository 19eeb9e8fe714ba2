package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/testkit"
)

// recordingRepublisher stands for the node's ingress: it records which
// ranges it was asked to republish and answers as if each held one event.
type recordingRepublisher struct {
	mu    sync.Mutex
	calls []engine.Position
}

func (r *recordingRepublisher) RepublishRange(_ context.Context, _ uint32, from, to engine.Position, _ int) (int, engine.Position, engine.Position, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, from, to)
	return 1, from, engine.Position{Index: from.Index + 1}, true, nil
}

func (r *recordingRepublisher) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls) / 2
}

// RepublishEvents asked of any node runs on the shard's leader (forwarded
// over the internal API, real Raft and gRPC) and only there; bad shards are
// InvalidArgument, and a leader without NATS says so.
func TestNode_RepublishEventsRunsOnTheShardLeader(t *testing.T) {
	_, nodes := startProxiedCluster(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const shardID = 1
	leader := -1
	for i, pn := range nodes {
		for _, sh := range pn.Node.Node.Shards() {
			if sh.ID() == shardID && sh.IsLeader() {
				leader = i
			}
		}
	}
	if leader < 0 {
		t.Fatal("shard 1 has no leader once the leaders settled")
	}
	follower := (leader + 1) % len(nodes)

	// The leader has no republisher yet: it answers FailedPrecondition,
	// naming NATS, through the follower.
	req := &pb.RepublishEventsRequest{Shard: shardID, From: &pb.Position{Index: 7, Ordinal: 2}, To: &pb.Position{Index: 9}}
	_, err := nodes[follower].Node.Node.RepublishEvents(ctx, req)
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "NATS") {
		t.Fatalf("republish on a leader without NATS: %v, want FailedPrecondition naming NATS", err)
	}

	// Asked through a follower, the leader runs it. Leadership can move
	// between finding the leader and asking (CI saw it on a loaded
	// machine): then the attempt is made again against the new one.
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(t, "republish run by the shard's leader", func() error {
		lead := leaderOf(nodes, shardID)
		if lead < 0 {
			return errors.New("no lead")
		}
		via := (lead + 1) % len(nodes)
		recs := make([]*recordingRepublisher, len(nodes))
		for i, pn := range nodes {
			recs[i] = &recordingRepublisher{}
			pn.Node.Node.SetRepublisher(recs[i])
		}
		resp, err := nodes[via].Node.Node.RepublishEvents(ctx, req)
		if err != nil {
			return err
		}
		if now := leaderOf(nodes, shardID); resp.GetNodeId() != nodes[lead].Node.Node.ID() && now != lead {
			return fmt.Errorf("leadership moved from %s while asking", nodes[lead].Node.Node.ID())
		}
		if resp.GetNodeId() != nodes[lead].Node.Node.ID() || resp.GetRepublished() != 1 || !resp.GetDone() ||
			resp.GetLast().GetIndex() != 7 || resp.GetNext().GetIndex() != 8 {
			t.Fatalf("republish through %s: %v, want it answered by the leader %s", nodes[via].Node.Node.ID(), resp, nodes[lead].Node.Node.ID())
		}
		for i, r := range recs {
			want := 0
			if i == lead {
				want = 1
			}
			if r.count() != want {
				t.Fatalf("node %s republished %d times, want %d", nodes[i].Node.Node.ID(), r.count(), want)
			}
		}
		recs[lead].mu.Lock()
		from, to := recs[lead].calls[0], recs[lead].calls[1]
		recs[lead].mu.Unlock()
		if from != (engine.Position{Index: 7, Ordinal: 2}) || to != (engine.Position{Index: 9}) {
			t.Fatalf("the leader got from %v to %v, want 7/2 to 9/0", from, to)
		}
		return nil
	})

	for _, bad := range []*pb.RepublishEventsRequest{
		{Shard: 2},
		{Shard: shardID, From: &pb.Position{Index: 9}, To: &pb.Position{Index: 8}},
	} {
		if _, err := nodes[follower].Node.Node.RepublishEvents(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("republish %v: %v, want InvalidArgument", bad, err)
		}
	}
}

// leaderOf is the index of the node whose replica leads shard id, -1 if none.
func leaderOf(nodes []*proxiedNode, id uint32) int {
	for i, pn := range nodes {
		for _, sh := range pn.Node.Node.Shards() {
			if sh.ID() == id && sh.IsLeader() {
				return i
			}
		}
	}
	return -1
}
