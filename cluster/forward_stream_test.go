package cluster_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
	"github.com/rhizon/rhizon/shard"
)

// TestForward_CommandsGoOverOneStreamAndAnswerAsUnary: a node that does not
// lead a shard forwards its commands to the leader as messages of one
// ForwardStream (not one call each), concurrently, and each caller gets its
// own answer: accepted at its own version, one effect each, and a repeated
// idempotency key answered as a replay of the first.
func TestForward_CommandsGoOverOneStreamAndAnswerAsUnary(t *testing.T) {
	const shards = 2
	c, nodes := startProxiedCluster(t, shards)
	ctx := ctx(t)
	addr := actor.Address{Tenant: "a", Workspace: "w", ActorType: "counter", EntityID: "streamed"}
	id := actor.ShardOf(addr, shards)
	req := func(key string) *pb.SubmitRequest {
		return &pb.SubmitRequest{Address: pb.FromAddress(addr), Type: "cmd.counter.add", Payload: []byte(`{"amount":1}`), IdempotencyKey: key}
	}
	var fwd *proxiedNode
	testkit.EventuallyNil(t, 30*time.Second, "shard leader", func() error {
		ln, err := c.Leader(id)
		if err != nil {
			return err
		}
		for _, pn := range nodes {
			if pn.Node != ln {
				fwd = pn
			}
		}
		return nil
	})
	before, opened := fwd.Node.Node.Forwarded(), fwd.Node.Node.ForwardStreamsOpened()

	const n = 40
	versions := make(chan uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := rawSubmit(ctx, t, fwd.Addr, req(fmt.Sprintf("k%d", i)))
			if err != nil {
				t.Errorf("submit %d: %v", i, err)
				return
			}
			// A replay is allowed: on a loaded machine the node may retry a
			// forward whose answer was late (same command id, CI saw it); the
			// distinct versions and the entity's final version below still
			// prove one effect per command.
			if r := resp.GetResult(); r.GetStatus() != pb.Status_STATUS_ACCEPTED || r.GetDuplicate() {
				t.Errorf("submit %d: %v, want accepted", i, r)
			}
			versions <- resp.GetResult().GetVersion()
		})
	}
	wg.Wait()
	close(versions)
	seen := map[uint64]bool{}
	for v := range versions {
		if seen[v] {
			t.Errorf("two commands answered with version %d", v)
		}
		seen[v] = true
	}
	if f := fwd.Node.Node.Forwarded() - before; f < n {
		t.Fatalf("the node forwarded %d commands, want %d: the test must go through forwarding", f, n)
	}
	total := uint64(0)
	for peer, s := range fwd.Node.Node.ForwardStreamsOpened() {
		total += s
		if s-opened[peer] > 1 {
			t.Errorf("%d ForwardStreams opened to %s for %d forwards, want at most one", s-opened[peer], peer, n)
		}
	}
	if total == 0 {
		t.Error("no ForwardStream opened: the forwards went by unary call")
	}

	again, err := rawSubmit(ctx, t, fwd.Addr, req("k7"))
	if err != nil {
		t.Fatal(err)
	}
	if r := again.GetResult(); !r.GetDuplicate() && !r.GetReplay() {
		t.Errorf("the same key again: %v, want the first answer (duplicate)", r)
	}
	ent, _, err := fwd.Node.Node.Get(ctx, addr, false)
	if err != nil {
		t.Fatal(err)
	}
	if ent.Version != n {
		t.Errorf("entity at version %d after %d commands and a repeated key, want %d", ent.Version, n, n)
	}
}

// TestForward_AStreamedRefusalNamesTheLeader: a peer that does not lead the
// shard answers a streamed forward as it answers the unary call: not the
// leader, not applied, and the leader's name in the answer's trailers, which
// the forwarding node then asks.
func TestForward_AStreamedRefusalNamesTheLeader(t *testing.T) {
	const shards = 2
	c, _ := startProxiedCluster(t, shards)
	ctx := ctx(t)
	addr := actor.Address{Tenant: "a", Workspace: "w", ActorType: "counter", EntityID: "refused"}
	id := actor.ShardOf(addr, shards)
	cmd := &pb.Command{Address: pb.FromAddress(addr), Type: "cmd.counter.add", Payload: []byte(`{"amount":1}`),
		IdempotencyKey: "refused-1", Id: "refused-1", Principal: &pb.Principal{Id: "alice", Type: "user"}}
	var leader, follower, from *clustertest.Node
	testkit.EventuallyNil(t, 30*time.Second, "shard leader", func() error {
		ln, err := c.Leader(id)
		if err != nil {
			return err
		}
		leader, follower, from = ln, nil, nil
		for _, n := range c.Nodes {
			switch {
			case n == ln:
			case follower == nil:
				follower = n
			default:
				from = n
			}
		}
		return nil
	})
	hint, applied, err := from.Node.ForwardTo(ctx, follower.ID, cmd)
	if !errors.Is(err, shard.ErrNotLeader) || applied || hint != leader.ID {
		t.Fatalf("forward to a follower: err %v, applied %v, leader %q; want ErrNotLeader, not applied, leader %s", err, applied, hint, leader.ID)
	}
	if _, _, err := from.Node.ForwardTo(ctx, leader.ID, cmd); err != nil {
		t.Fatalf("forward to the leader: %v", err)
	}
	var streams uint64
	for _, s := range from.Node.ForwardStreamsOpened() {
		streams += s
	}
	if streams != 2 {
		t.Errorf("%d ForwardStreams opened, want one to each peer asked", streams)
	}
}
