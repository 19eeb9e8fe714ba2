package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// cutProxy stands in front of a node's gRPC port: peers reach the node
// through it (it is the address the node advertises), so the test can lose
// the node's answers to them and then cut the link.
type cutProxy struct {
	l      net.Listener
	target string
	mute   atomic.Bool // drop everything the node sends back

	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.cut() })
	return p
}

func (p *cutProxy) addr() string { return p.l.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c); s.Close() }()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && !p.mute.Load() {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

// cut closes every connection through the proxy and lets new ones talk.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mute.Store(false)
}

type proxiedNode struct {
	*clustertest.Node
	proxy *cutProxy
}

// startProxiedCluster starts 3 real nodes (Raft over TCP, Badger on disk)
// whose node-to-node gRPC calls go through a cutProxy each, and waits until
// the shards' leaders have settled.
func startProxiedCluster(t *testing.T, shards uint32) (*clustertest.Cluster, []*proxiedNode) {
	t.Helper()
	var proxies []*cutProxy
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: shards, ShardTemplate: testShardConfig(),
		Tokens: []gateway.TokenEntry{
			{Token: tokenA, Principal: gateway.TokenPrincipal{ID: "alice", Type: "user"}, Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}}},
		},
		AdvertiseAddr: func(t testing.TB, listen string) string {
			px := newCutProxy(t, listen)
			proxies = append(proxies, px)
			return px.addr()
		},
	})
	var nodes []*proxiedNode
	for i, n := range c.Nodes {
		nodes = append(nodes, &proxiedNode{Node: n, proxy: proxies[i]})
	}
	// The controller spreads leaders after a start; the tests find a shard's
	// leader and then talk to it or around it, which a transfer would spoil
	// (CI saw it on a loaded machine).
	c.WaitSettled(t)
	return c, nodes
}

// rawSubmit calls one gateway's Submit once, with no client-side retry.
func rawSubmit(ctx context.Context, t *testing.T, addr string, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokenA)
	return pb.NewGatewayClient(conn).Submit(ctx, req)
}

// TestPromise_ExactlyOnce_InternalRetryAnswersTheSingleCallerNormally: a
// command sent once to a node that forwards it to the shard leader; the
// leader applies it, and its answer is lost on the link, which is then cut.
// The forwarding node retries on its own (same command id), the leader finds
// the command applied: the caller, who sent it once, gets accepted with the
// command's version, not "duplicate". A later submission with the same key
// and another command id is a duplicate; the caller's own retry (same
// command id) is a replay.
func TestPromise_ExactlyOnce_InternalRetryAnswersTheSingleCallerNormally(t *testing.T) {
	const shards = 2
	c, nodes := startProxiedCluster(t, shards)
	ctx := ctx(t)
	// An attempt whose shard leader moved under it (an election on a loaded
	// machine) did not test the retry; it is run again on a new entity.
	for attempt := range 3 {
		if internalRetryAnswersNormally(ctx, t, c, nodes, fmt.Sprint("once-", attempt)) {
			return
		}
		t.Logf("attempt %d: the shard's leader moved under it; again on a new entity", attempt)
		c.WaitSettled(t)
	}
	t.Fatal("the shard's leader moved under three attempts")
}

// internalRetryAnswersNormally runs the scenario on entity; false when the
// shard's leader moved while it ran, so that it tested nothing.
func internalRetryAnswersNormally(ctx context.Context, t *testing.T, c *clustertest.Cluster, nodes []*proxiedNode, entity string) bool {
	t.Helper()
	const shards = 2
	addr := actor.Address{Tenant: "a", Workspace: "w", ActorType: "counter", EntityID: entity}
	id := actor.ShardOf(addr, shards)
	req := func(key, cmdID string) *pb.SubmitRequest {
		return &pb.SubmitRequest{
			Address: pb.FromAddress(addr), Type: "cmd.counter.add", Payload: []byte(`{"amount":7}`),
			IdempotencyKey: key, CommandId: cmdID,
		}
	}
	leaderNow := func() *clustertest.Node {
		ln, _ := c.Leader(id)
		return ln
	}

	// Two commands first, so the one under test has version 3 and the
	// forwarding node has its connection to the leader.
	var leader, fwd *proxiedNode
	testkit.EventuallyNil(t, 30*time.Second, "shard leader", func() error {
		ln, err := c.Leader(id)
		if err != nil {
			return err
		}
		for _, pn := range nodes {
			if pn.Node == ln {
				leader = pn
			} else {
				fwd = pn
			}
		}
		return nil
	})
	for i := range 2 {
		if _, err := rawSubmit(ctx, t, fwd.Addr, req(fmt.Sprintf("warm-%d", i), "")); err != nil {
			t.Fatal(err)
		}
	}

	fwdBefore := fwd.Node.Node.Forwarded()
	leader.proxy.mute.Store(true)
	if leaderNow() != leader.Node {
		leader.proxy.mute.Store(false)
		return false
	}
	type answer struct {
		resp *pb.SubmitResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		// No command id: the gateway assigns one, and it must survive the
		// node's internal retries.
		resp, err := rawSubmit(ctx, t, fwd.Addr, req("once-1", ""))
		done <- answer{resp, err}
	}()
	// Cut the link once the command is applied (committed) on any replica:
	// the forward's answer is lost after the proposal.
	testkit.Poll{Timeout: 20 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "the command applied", func() (bool, string) {
		for _, pn := range nodes {
			for _, s := range pn.Node.Node.Shards() {
				if s.ID() != id {
					continue
				}
				if _, ok, err := s.Store().Result(addr, "once-1"); err == nil && ok {
					return true, ""
				}
			}
		}
		return false, "no replica has its result"
	})
	moved := leaderNow() != leader.Node
	leader.proxy.cut()

	var got answer
	select {
	case got = <-done:
	case <-time.After(40 * time.Second):
		t.Fatal("no answer 40 s after the cut")
	}
	if got.err != nil {
		t.Fatalf("submit sent once: %v", got.err)
	}
	if n := fwd.Node.Node.Forwarded() - fwdBefore; n < 2 {
		if moved {
			return false
		}
		t.Fatalf("the forwarding node forwarded %d times; the test needs its internal retry", n)
	}
	res := got.resp.GetResult()
	if res.GetStatus() != pb.Status_STATUS_ACCEPTED || res.GetDuplicate() || res.GetVersion() != 3 ||
		len(res.GetEvents()) != 1 || res.GetEvents()[0].GetVersion() != 3 || res.GetEvents()[0].GetId() != engine.EventID(addr, 3) {
		t.Fatalf("a command sent once, retried inside the cluster: %v; want accepted at version 3, not duplicate", res)
	}
	if !res.GetReplay() {
		t.Fatalf("the retried attempt's answer is not marked as a replay of the first: %v", res)
	}

	// The caller's own retry (same command id) is a replay too.
	own, err := rawSubmit(ctx, t, fwd.Addr, req("once-1", res.GetCommandId()))
	if err != nil {
		t.Fatal(err)
	}
	if r := own.GetResult(); r.GetDuplicate() || !r.GetReplay() || r.GetStatus() != pb.Status_STATUS_ACCEPTED || r.GetVersion() != 3 {
		t.Fatalf("the caller's own retry: %v; want accepted at version 3, replay, not duplicate", r)
	}

	// Another submission under the same key: duplicate, the original result.
	dup, err := rawSubmit(ctx, t, fwd.Addr, req("once-1", "another-submission"))
	if err != nil {
		t.Fatal(err)
	}
	if r := dup.GetResult(); !r.GetDuplicate() || r.GetReplay() || r.GetStatus() != pb.Status_STATUS_ACCEPTED ||
		r.GetVersion() != 3 || r.GetCommandId() != res.GetCommandId() {
		t.Fatalf("same key, another command id: %v; want duplicate with the original result", r)
	}

	ent, _, err := leader.Node.Node.Get(ctx, addr, false)
	if err != nil {
		t.Fatal(err)
	}
	if ent.Version != 3 {
		t.Fatalf("entity at version %d, want 3: one effect", ent.Version)
	}
	return true
}

// TestClient_OwnRetryIsAReplayAnotherSubmissionADuplicate: the Go client
// keeps the command id it set on the request, so sending the same request
// again (its own retry after, say, an unknown outcome) is answered as a
// replay of its earlier attempt; a new request under the same key is a
// duplicate.
func TestClient_OwnRetryIsAReplayAnotherSubmissionADuplicate(t *testing.T) {
	tn := startNode(t, t.TempDir(), 2)
	c := tn.client(t, tokenA)
	req := submit("counter", "r1", "add", "k1", `{"amount":2}`)
	first, err := c.Submit(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if req.CommandId == "" || first.Result.CommandId != req.CommandId || first.Result.Replay || first.Result.Duplicate {
		t.Fatalf("first attempt: %v (request command id %q)", first.Result, req.CommandId)
	}
	again, err := c.Submit(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if r := again.Result; !r.Replay || r.Duplicate || r.Status != pb.Status_STATUS_ACCEPTED || r.Version != 1 || r.Index != first.Result.Index {
		t.Fatalf("the client's own retry: %v; want the first result, replay", r)
	}
	other, err := c.Submit(ctx(t), submit("counter", "r1", "add", "k1", `{"amount":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if r := other.Result; !r.Duplicate || r.Replay || r.Version != 1 || r.CommandId != req.CommandId {
		t.Fatalf("another submission with the same key: %v; want duplicate with the original result", r)
	}
}
