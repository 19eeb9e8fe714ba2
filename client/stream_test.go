package client

import (
	"context"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// streamsOpened sums the SubmitStreams c opened over all its connections,
// getStreamsOpened its GetStreams.
func streamsOpened(c *Client) uint64 {
	return opened(c, func(gw *gwConn) uint64 { return gw.st.Opened() })
}
func getStreamsOpened(c *Client) uint64 {
	return opened(c, func(gw *gwConn) uint64 { return gw.get.Opened() })
}

func opened(c *Client, of func(*gwConn) uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for _, ep := range c.eps {
		for _, gw := range ep.gws {
			n += of(gw)
		}
	}
	return n
}

// oneNode starts a one-node cluster that takes the bench token and returns
// a dialer of clients to it, with that token and leader routing.
func oneNode(t *testing.T) func(opts ...Option) *Client {
	tc := clustertest.Start(t, clustertest.Options{
		Nodes: 1, Shards: 1,
		Tokens: []gateway.TokenEntry{{
			Token: clusterToken, Principal: gateway.TokenPrincipal{ID: "bench", Type: "service"},
			Scopes: []gateway.TokenScope{{Tenant: "bench", Workspace: "*"}},
		}},
	})
	return func(opts ...Option) *Client {
		c, err := Dial(tc.Addrs()[0], append([]Option{WithToken(clusterToken), WithLeaderRouting(true)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
}

// outcomeOf is what a test compares of a Submit's answer: the status, or
// the response without what differs between two submissions of the same
// command (ids, log positions, times, the workspace).
func outcomeOf(resp *pb.SubmitResponse, err error) proto.Message {
	if err != nil {
		return status.Convert(err).Proto()
	}
	resp = proto.CloneOf(resp)
	r := resp.GetResult()
	r.CommandId, r.Index = "", 0
	for _, e := range r.GetEvents() {
		e.Id, e.At, e.CommandId, e.CorrelationId, e.Index, e.Address.Workspace = "", 0, "", "", 0, ""
	}
	return resp
}

// Streamed and unary submits answer the same, against a real node: accepted,
// replayed, version conflict, rejected by the actor, invalid (by the actor
// and by the gateway) and outside the token's scope; and the streamed
// answers carry the trailers the routing code learns from.
func TestStreamedSubmitAnswersAsUnary(t *testing.T) {
	dialOne := oneNode(t)
	streamed, unary := dialOne(), dialOne(WithUnarySubmits())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Each client works in a workspace of its own, so that both start from
	// the same state; the requests are otherwise the same.
	type step struct {
		name string
		req  func(ws string) *pb.SubmitRequest
	}
	add := func(entity, payload string, expected uint64) func(string) *pb.SubmitRequest {
		return func(ws string) *pb.SubmitRequest {
			r := &pb.SubmitRequest{
				Address: &pb.Address{Workspace: ws, ActorType: "counter", EntityId: entity},
				Type:    "cmd.counter.add", Payload: []byte(payload),
			}
			if expected > 0 {
				r.ExpectedVersion = proto.Uint64(expected)
			}
			return r
		}
	}
	steps := []step{
		{"accepted", add("a", `{"amount":1}`, 0)},
		{"accepted at the expected version", add("a", `{"amount":1}`, 1)},
		{"version conflict", add("a", `{"amount":1}`, 7)},
		{"to the top", add("b", fmt.Sprintf(`{"amount":%d}`, int64(math.MaxInt64)), 0)},
		{"rejected (overflow)", add("b", `{"amount":1}`, 0)},
		{"invalid (the actor's)", add("a", `{"amount":1,"by":2}`, 0)},
		{"invalid (the gateway's)", add("", `{"amount":1}`, 0)},
		{"unknown command", func(ws string) *pb.SubmitRequest {
			r := add("a", `{}`, 0)(ws)
			r.Type = "cmd.counter.nosuch"
			return r
		}},
		{"outside the token's scope", func(ws string) *pb.SubmitRequest {
			r := add("a", `{"amount":1}`, 0)(ws)
			r.Address.Tenant = "other"
			return r
		}},
	}
	for _, s := range steps {
		u, err := unary.Submit(ctx, s.req("u"))
		want := outcomeOf(u, err)
		sreq := s.req("u2")
		sresp, serr := streamed.Submit(ctx, sreq)
		got := outcomeOf(sresp, serr)
		// Messages may name the workspace: compare them with it normalized.
		if st, ok := got.(interface{ GetMessage() string }); ok && st.GetMessage() != "" {
			if w, ok := want.(interface{ GetMessage() string }); ok && strings.ReplaceAll(st.GetMessage(), "u2", "u") == w.GetMessage() {
				got = want
			}
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s: streamed %v, unary %v", s.name, got, want)
		}
		// The same request again: a replay of the first, both ways.
		if serr == nil {
			again, err := streamed.Submit(ctx, sreq)
			if err != nil || !again.GetResult().GetReplay() || again.GetResult().GetCommandId() != sresp.GetResult().GetCommandId() {
				t.Errorf("%s: resubmitted, streamed %v, %v; want a replay of %v", s.name, again, err, sresp)
			}
		}
	}
	if n := streamsOpened(streamed); n != 1 {
		t.Errorf("the streamed client opened %d streams, want 1", n)
	}
	if n := streamsOpened(unary); n != 0 {
		t.Errorf("WithUnarySubmits opened %d streams", n)
	}
	// The rhizon-scope trailer came with the streamed answers.
	if _, ok := streamed.r.resolve(&pb.Address{Workspace: "u2", ActorType: "counter", EntityId: "x"}); !ok {
		t.Error("the streamed client did not learn the token's default scope from the answers' trailers")
	}
}

// Cancelling one call on a stream leaves the others, and the stream, alone.
func TestStreamedSubmitCancelOneCall(t *testing.T) {
	gate := make(chan struct{})
	_, addr := serve(t, func(_ int, cmd actor.Command) (actor.Result, error) {
		if cmd.IdempotencyKey == "slow" {
			<-gate
		}
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	})
	defer close(gate)
	c := dial(t, addr, WithTenant("dev"), WithWorkspace("w1"))
	if _, err := c.Submit(context.Background(), addReq()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	slow := addReq()
	slow.IdempotencyKey = "slow"
	slowErr := make(chan error, 1)
	go func() { _, err := c.Submit(ctx, slow); slowErr <- err }()
	// Others go through while the slow one waits on the same stream.
	for i := range 5 {
		if _, err := c.Submit(context.Background(), addReq()); err != nil {
			t.Fatalf("submit %d beside the slow one: %v", i, err)
		}
	}
	cancel()
	if err := <-slowErr; status.Code(err) != codes.Canceled || !IsUnknownOutcome(err) {
		t.Fatalf("the cancelled call returned %v, want Canceled (outcome unknown)", err)
	}
	// And after it, on the same stream.
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 20 {
		wg.Go(func() {
			if _, err := c.Submit(context.Background(), addReq()); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := streamsOpened(c); n != 1 {
		t.Errorf("%d streams opened, want 1: the cancel broke the stream", n)
	}
}

// unaryOnly serves Submit and nothing else, as a node from before
// SubmitStream.
type unaryOnly struct {
	pb.UnimplementedGatewayServer
	calls atomic.Int32
}

func (u *unaryOnly) Submit(_ context.Context, req *pb.SubmitRequest) (*pb.SubmitResponse, error) {
	u.calls.Add(1)
	return &pb.SubmitResponse{Result: &pb.Result{CommandId: req.GetCommandId(), Status: pb.Status_STATUS_ACCEPTED}}, nil
}

// serveUnaryOnly serves a unaryOnly on a free port of 127.0.0.1 until the
// test ends.
func serveUnaryOnly(t *testing.T) (*unaryOnly, string) {
	t.Helper()
	u := &unaryOnly{}
	gs := grpc.NewServer()
	pb.RegisterGatewayServer(gs, u)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return u, lis.Addr().String()
}

func (u *unaryOnly) Get(_ context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	u.calls.Add(1)
	return &pb.GetResponse{Address: req.GetAddress(), Version: 5, Found: true}, nil
}

// Against a server without GetStream the client reads by unary calls, and
// stops trying the stream.
func TestStreamedGetFallsBackToUnary(t *testing.T) {
	u, addr := serveUnaryOnly(t)
	c := dial(t, addr, WithTenant("dev"), WithWorkspace("w1"))
	for range 3 {
		resp, err := c.Get(context.Background(), &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "a"}})
		if err != nil || resp.GetVersion() != 5 {
			t.Fatalf("get: %v, %v", resp, err)
		}
	}
	if n := u.calls.Load(); n != 3 {
		t.Errorf("%d unary Gets reached the server, want 3", n)
	}
	for _, gw := range c.seeds[0].gws {
		if gw.get.Opened() > 0 && !gw.get.Off() {
			t.Error("the client still tries GetStream after Unimplemented")
		}
	}
}

// Streamed and unary Gets answer the same against a real node (found, not
// found, stale, refused by the gateway, outside the token's scope), the
// streamed answers carry the routing trailers, and the reads of a client
// share one stream.
func TestStreamedGetAnswersAsUnary(t *testing.T) {
	dialOne := oneNode(t)
	streamed, unary := dialOne(WithWorkspace("w")), dialOne(WithWorkspace("w"), WithUnaryGets())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := unary.Submit(ctx, &pb.SubmitRequest{
		Address: &pb.Address{ActorType: "counter", EntityId: "a"}, Type: "cmd.counter.add", Payload: []byte(`{"amount":3}`),
	}); err != nil {
		t.Fatal(err)
	}
	reads := []struct {
		name string
		req  *pb.GetRequest
	}{
		{"found", &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "a"}}},
		{"not found", &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "b"}}},
		{"stale", &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "a"}, Consistency: pb.Consistency_CONSISTENCY_STALE}},
		{"no entity id", &pb.GetRequest{Address: &pb.Address{ActorType: "counter"}}},
		{"unknown actor type", &pb.GetRequest{Address: &pb.Address{ActorType: "nosuch", EntityId: "a"}}},
		{"outside the token's scope", &pb.GetRequest{Address: &pb.Address{Tenant: "other", Workspace: "w", ActorType: "counter", EntityId: "a"}}},
	}
	of := func(resp *pb.GetResponse, err error) proto.Message {
		if err != nil {
			return status.Convert(err).Proto()
		}
		resp = proto.CloneOf(resp)
		resp.AppliedIndex = 0 // a refused read records the violation: the index moves
		return resp
	}
	for _, r := range reads {
		want := of(unary.Get(ctx, r.req))
		got := of(streamed.Get(ctx, r.req))
		if st, ok := want.(*spb.Status); ok {
			if gst, ok := got.(*spb.Status); ok && gst.GetCode() == st.GetCode() && gst.GetMessage() == st.GetMessage() {
				continue // details hold maps, whose bytes differ from one marshalling to the next
			}
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s: streamed %v, unary %v", r.name, got, want)
		}
	}
	if resp, err := streamed.Get(ctx, reads[0].req); err != nil || resp.GetVersion() != 1 || !resp.GetFound() {
		t.Fatalf("streamed read of the entity written: %v, %v", resp, err)
	}
	if gets, unaryGets := getStreamsOpened(streamed), getStreamsOpened(unary); gets != 1 || unaryGets != 0 {
		t.Errorf("get streams opened: %d by the streamed client (want 1), %d by WithUnaryGets (want 0)", gets, unaryGets)
	}
	// The rhizon-scope trailer came with the streamed answers (this client
	// submitted nothing).
	if _, ok := streamed.r.resolve(&pb.Address{Workspace: "w", ActorType: "counter", EntityId: "x"}); !ok {
		t.Error("the streamed client did not learn the token's default scope from the answers' trailers")
	}
}

// Against a server without SubmitStream the client submits by unary calls,
// all of them (concurrent ones too), and stops trying the stream.
func TestStreamedSubmitFallsBackToUnary(t *testing.T) {
	u, addr := serveUnaryOnly(t)
	c := dial(t, addr)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			resp, err := c.Submit(context.Background(), addReq())
			if err != nil || resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
				t.Errorf("submit: %v, %v", resp, err)
			}
		})
	}
	wg.Wait()
	if n := u.calls.Load(); n != 10 {
		t.Errorf("%d unary Submits reached the server, want 10", n)
	}
	off := true
	for _, gw := range c.seeds[0].gws {
		off = off && gw.st.Off()
	}
	if !off {
		t.Error("the client still tries SubmitStream after Unimplemented")
	}
	if n := streamsOpened(c); n > 1 {
		t.Errorf("%d streams opened, want at most the first", n)
	}
}

// A stream cut with a command in flight: the call fails as a unary call
// cut in flight does (Unavailable, outcome unknown, not the gateway's
// verdict), within its deadline, though the node goes on and applies it;
// the next submit opens a new stream.
func TestStreamedSubmitCutInFlightIsUnknown(t *testing.T) {
	gate := make(chan struct{})
	be, addr := serve(t, func(_ int, cmd actor.Command) (actor.Result, error) {
		if cmd.IdempotencyKey == "slow" {
			<-gate
		}
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	})
	defer close(gate)
	p := newCutProxy(t, addr)
	c := dial(t, p.l.Addr().String(), WithTenant("dev"), WithWorkspace("w1"), WithRetries(0))
	if _, err := c.Submit(context.Background(), addReq()); err != nil {
		t.Fatal(err)
	}
	slow := addReq()
	slow.IdempotencyKey = "slow"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	slowErr := make(chan error, 1)
	go func() { _, err := c.Submit(ctx, slow); slowErr <- err }()
	testkit.Eventually(t, 10*time.Second, "the slow command at the node", func() (bool, string) {
		for _, cmd := range be.commands() {
			if cmd.IdempotencyKey == "slow" {
				return true, ""
			}
		}
		return false, fmt.Sprint(len(be.commands()), " commands, none slow")
	})
	p.cut()
	err := <-slowErr
	if ctx.Err() != nil {
		t.Fatalf("the cut call returned only at its deadline: %v", err)
	}
	if status.Code(err) != codes.Unavailable || !IsUnknownOutcome(err) || IsNotApplied(err) || IsGatewayUnknownOutcome(err) {
		t.Fatalf("the cut call returned %v, want Unavailable with the outcome unknown", err)
	}
	if !retryable(err) {
		t.Fatalf("%v is not retried, as a unary call cut in flight is", err)
	}
	testkit.EventuallyNil(t, 10*time.Second, "a submit after the cut", func() error {
		_, err := c.Submit(context.Background(), addReq())
		return err
	})
	if n := streamsOpened(c); n != 2 {
		t.Errorf("%d streams opened, want 2 (one before the cut, one after)", n)
	}
}
