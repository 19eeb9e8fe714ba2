package gateway

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/testkit"
)

func openStream(t *testing.T, h *harness, token string) pb.Gateway_SubmitStreamClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	st, err := h.gw.SubmitStream(withToken(ctx, token))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// sameAsUnary checks that a stream answer is what the unary call gave:
// status (code, message, details), response and trailers.
func sameAsUnary(t *testing.T, name string, got *pb.SubmitStreamResponse, resp *pb.SubmitResponse, err error, tr metadata.MD) {
	t.Helper()
	want := status.Convert(err).Proto()
	if err == nil {
		want = nil
	}
	// Compared unpacked (sameStatus): ErrorInfo's metadata is a map, whose
	// packed bytes differ from one marshalling to the next.
	if (got.GetError() == nil) != (want == nil) || want != nil && !sameStatus(status.FromProto(got.GetError()), status.FromProto(want)) {
		t.Errorf("%s: stream error %v, unary %v", name, got.GetError(), want)
	}
	if !proto.Equal(got.GetResponse(), resp) {
		t.Errorf("%s: stream response %v, unary %v", name, got.GetResponse(), resp)
	}
	for _, k := range []string{OutcomeTrailer, LeaderTrailer, LeaderAddrTrailer, ScopeTrailer} {
		u := ""
		if v := tr.Get(k); len(v) > 0 {
			u = v[0]
		}
		if got.GetTrailers()[k] != u {
			t.Errorf("%s: trailer %s %q on the stream, %q unary", name, k, got.GetTrailers()[k], u)
		}
	}
}

// Each message of one stream gets exactly what a unary Submit answers, for
// the bad inputs of the Submit table (refused before the backend) and the
// backend's outcomes; a bad message does not end the stream.
func TestSubmitStreamAnswersAsSubmit(t *testing.T) {
	h := newHarness(t)
	ctx := withToken(context.Background(), tokAlice)
	type call struct {
		name string
		req  *pb.SubmitRequest
		res  actor.Result
		err  error
	}
	var calls []call
	for _, tc := range badSubmits() {
		if tc.token == tokAlice {
			calls = append(calls, call{name: tc.name, req: tc.req})
		}
	}
	good := func(k string) *pb.SubmitRequest {
		r := counterReq("c1", k, `{"amount":1}`)
		r.CommandId = "cmd-" + k // the same on both calls: errors name it
		return r
	}
	noScope := good("noscope")
	noScope.Address.Tenant, noScope.Address.Workspace = "", ""
	calls = append(calls,
		call{name: "accepted", req: good("a"), res: actor.Result{Status: actor.StatusAccepted, Version: 1, Index: 7, Reply: []byte(`{"ok":true}`)}},
		call{name: "accepted, scope defaulted", req: noScope, res: actor.Result{Status: actor.StatusAccepted, Version: 1, Index: 8}},
		call{name: "conflict", req: good("b"), res: actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonConflict, Code: "version_conflict", Message: "at 4", Version: 4}},
		call{name: "engine violation", req: good("c"), res: actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonViolation, Message: "may not"}},
		call{name: "engine invalid", req: good("d"), res: actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonInvalid, Message: "bad field"}},
		call{name: "not leader", req: good("e"), err: fmt.Errorf("forward: %w", outcome.ErrNotLeader)},
		call{name: "unknown outcome", req: good("f"), err: outcome.ErrUnknownOutcome},
		call{name: "overloaded", req: good("g"), err: outcome.ErrOverloaded},
	)
	st := openStream(t, h, tokAlice)
	for i, c := range calls {
		h.be.submit = nil
		if c.res.Status != 0 || c.err != nil {
			h.be.submit = func(int, actor.Command) (actor.Result, error) { return c.res, c.err }
		}
		var tr metadata.MD
		resp, err := h.gw.Submit(ctx, c.req, grpc.Trailer(&tr))
		if err := st.Send(&pb.SubmitStreamRequest{Id: uint64(i), Command: c.req}); err != nil {
			t.Fatal(err)
		}
		got, rerr := st.Recv()
		if rerr != nil {
			t.Fatalf("%s: the stream ended: %v", c.name, rerr)
		}
		if got.GetId() != uint64(i) {
			t.Fatalf("%s: answer for id %d, want %d", c.name, got.GetId(), i)
		}
		sameAsUnary(t, c.name, got, resp, err, tr)
	}
	h.be.submit = nil
	if len(calls) < 15 {
		t.Fatalf("only %d cases", len(calls))
	}
}

// Answers come back as they complete: a slow command does not hold up a
// later fast one.
func TestSubmitStreamOutOfOrder(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.be.submit = func(_ int, cmd actor.Command) (actor.Result, error) {
		if cmd.IdempotencyKey == "slow" {
			<-release
		}
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}
	st := openStream(t, h, tokAlice)
	for id, k := range []string{"slow", "fast"} {
		if err := st.Send(&pb.SubmitStreamRequest{Id: uint64(id + 1), Command: counterReq("c1", k, `{"amount":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := st.Recv()
	if err != nil || first.GetId() != 2 {
		t.Fatalf("first answer %v %v, want id 2 (fast)", first, err)
	}
	close(release)
	second, err := st.Recv()
	if err != nil || second.GetId() != 1 || second.GetResponse().GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
		t.Fatalf("second answer %v %v, want id 1 accepted", second, err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("the stream goes on after the client closed and every answer came")
	}
}

// With StreamInFlight commands waiting, the server reads no more; each
// completion lets one more in.
func TestSubmitStreamBackPressure(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	var reached atomic.Int64
	h.be.submit = func(_ int, cmd actor.Command) (actor.Result, error) {
		reached.Add(1)
		<-release
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}
	st := openStream(t, h, tokAlice)
	const extra = 20
	go func() {
		for i := range StreamInFlight + extra {
			if st.Send(&pb.SubmitStreamRequest{Id: uint64(i), Command: counterReq("c1", fmt.Sprint("k", i), `{"amount":1}`)}) != nil {
				return
			}
		}
	}()
	inFlight := func() (bool, string) {
		n := reached.Load()
		return n == StreamInFlight, fmt.Sprintf("%d commands in flight, want the bound %d", n, StreamInFlight)
	}
	testkit.Eventually(t, 10*time.Second, "the bound reached", inFlight)
	// Room for a read past the bound, which would show as one more.
	testkit.Consistently(t, 200*time.Millisecond, "no read past the bound", inFlight)
	close(release)
	seen := map[uint64]bool{}
	for len(seen) < StreamInFlight+extra {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("after %d answers: %v", len(seen), err)
		}
		seen[r.GetId()] = true
	}
	h.be.submit = nil
}

// Reusing the id of a command in flight ends the stream with
// InvalidArgument, after the command in flight has its answer.
func TestSubmitStreamDuplicateIDEndsStream(t *testing.T) {
	h := newHarness(t)
	release := make(chan struct{})
	h.be.submit = func(_ int, cmd actor.Command) (actor.Result, error) {
		<-release
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}
	st := openStream(t, h, tokAlice)
	for _, k := range []string{"a", "b"} {
		if err := st.Send(&pb.SubmitStreamRequest{Id: 7, Command: counterReq("c1", k, `{"amount":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// No signal says the server has read the second request; released
	// before, the first would be answered and id 7 be free again.
	time.Sleep(100 * time.Millisecond)
	close(release)
	r, err := st.Recv()
	if err != nil || r.GetId() != 7 || r.GetResponse() == nil {
		t.Fatalf("answer %v %v, want the first id 7 answered", r, err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("stream ended with %v, want InvalidArgument", err)
	}
	h.be.submit = nil
}

// No token: the stream is refused. A token removed while the stream is open
// (a reload) answers the next message Unauthenticated, as a unary call.
// removeToken takes tok out of the gateway's token table, as a reload
// without it would, and returns the function that puts the table back.
func removeToken(h *harness, tok string) (restore func()) {
	old := h.srv.auth.byHash.Load()
	without := map[[sha256.Size]byte]Identity{}
	for k, v := range *old {
		if k != sha256.Sum256([]byte(tok)) {
			without[k] = v
		}
	}
	h.srv.auth.byHash.Store(&without)
	return func() { h.srv.auth.byHash.Store(old) }
}

func TestSubmitStreamAuthentication(t *testing.T) {
	h := newHarness(t)
	st := openStream(t, h, "")
	if _, err := st.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v, want Unauthenticated", err)
	}
	st = openStream(t, h, tokAlice)
	send := func(id uint64) *pb.SubmitStreamResponse {
		t.Helper()
		if err := st.Send(&pb.SubmitStreamRequest{Id: id, Command: counterReq("c1", fmt.Sprint("k", id), `{"amount":1}`)}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send(1); r.GetError() != nil {
		t.Fatalf("before the reload: %v", r.GetError())
	}
	restore := removeToken(h, tokAlice)
	if r := send(2); codes.Code(r.GetError().GetCode()) != codes.Unauthenticated {
		t.Fatalf("after the token was removed: %v, want Unauthenticated", r)
	}
	restore()
	if r := send(3); r.GetError() != nil {
		t.Fatalf("after the token came back: %v", r.GetError())
	}
}

// A client keeps its SubmitStream open (the Go client does): the gateway's
// Shutdown ends the stream Unavailable, so that the node's graceful stop
// (GracefulStop after Shutdown) finishes instead of waiting for the client.
func TestSubmitStreamEndsOnShutdown(t *testing.T) {
	h := newHarness(t)
	gs := grpc.NewServer(ServerOptions()...)
	h.srv.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st := openStream(t, &harness{gw: pb.NewGatewayClient(conn)}, tokAlice)
	if err := st.Send(&pb.SubmitStreamRequest{Id: 1, Command: counterReq("c1", "k1", `{"amount":1}`)}); err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); err != nil || m.GetResponse() == nil {
		t.Fatalf("answer %v, %v", m, err)
	}
	h.srv.Shutdown()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	testkit.Eventually(t, 10*time.Second, "graceful stop with a stream open", func() (bool, string) {
		select {
		case <-stopped:
			return true, ""
		default:
			return false, "GracefulStop still waits"
		}
	})
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the stream ended %v, want Unavailable", err)
	}
}

// Each message of a GetStream gets exactly what a unary Get answers (status,
// response, routing trailers): found, new, bad input refused by the gateway,
// another tenant's entity (refused and recorded, as unary), a stale read, and
// a token removed while the stream is open. A bad read does not end the
// stream, and a read spends the tenant's quota as a unary one does.
func TestGetStreamAnswersAsGet(t *testing.T) {
	h, _, _ := newQuotaHarness(t, "default: {rate: 1000, burst: 1000}\ntenants: {acme: {rate: 1, burst: 4}}\n", 0)
	ctx := withToken(context.Background(), tokAlice)
	good := &pb.Address{ActorType: "counter", EntityId: "c1"}
	calls := []struct {
		name   string
		req    *pb.GetRequest
		entity engine.Entity
	}{
		{"found", &pb.GetRequest{Address: good}, engine.Entity{Version: 3, State: []byte(`{"value":7}`)}},
		{"new", &pb.GetRequest{Address: good, Consistency: pb.Consistency_CONSISTENCY_STALE}, engine.Entity{}},
		{"missing entity", &pb.GetRequest{Address: &pb.Address{ActorType: "counter"}}, engine.Entity{}},
		{"unknown type", &pb.GetRequest{Address: &pb.Address{ActorType: "nope", EntityId: "x"}}, engine.Entity{}},
		{"other tenant", &pb.GetRequest{Address: &pb.Address{Tenant: "other", Workspace: "w", ActorType: "counter", EntityId: "c1"}}, engine.Entity{}},
		{"no request", nil, engine.Entity{}},
	}
	ctxS, cancel := context.WithTimeout(withToken(context.Background(), tokAlice), 30*time.Second)
	defer cancel()
	st, err := h.gw.GetStream(ctxS)
	if err != nil {
		t.Fatal(err)
	}
	recv := func(id uint64) *pb.GetStreamResponse {
		t.Helper()
		got, err := st.Recv()
		if err != nil {
			t.Fatalf("the stream ended: %v", err)
		}
		if got.GetId() != id {
			t.Fatalf("answer for id %d, want %d", got.GetId(), id)
		}
		return got
	}
	for i, c := range calls {
		h.be.reset()
		h.be.entity, h.be.applied = c.entity, 42
		var tr metadata.MD
		req := c.req
		if req == nil {
			req = &pb.GetRequest{}
		}
		resp, uerr := h.gw.Get(ctx, req, grpc.Trailer(&tr))
		unaryCmds := len(h.be.commands())
		if err := st.Send(&pb.GetStreamRequest{Id: uint64(i), Get: c.req}); err != nil {
			t.Fatal(err)
		}
		got := recv(uint64(i))
		want := status.Convert(uerr).Proto()
		if uerr == nil {
			want = nil
		}
		if (got.GetError() == nil) != (want == nil) || want != nil && !sameStatus(status.FromProto(got.GetError()), status.FromProto(want)) {
			t.Errorf("%s: stream error %v, unary %v", c.name, got.GetError(), want)
		}
		if !proto.Equal(got.GetResponse(), resp) {
			t.Errorf("%s: stream response %v, unary %v", c.name, got.GetResponse(), resp)
		}
		for _, k := range []string{LeaderTrailer, LeaderAddrTrailer, ScopeTrailer} {
			u := ""
			if v := tr.Get(k); len(v) > 0 {
				u = v[0]
			}
			if got.GetTrailers()[k] != u {
				t.Errorf("%s: trailer %s %q on the stream, %q unary", c.name, k, got.GetTrailers()[k], u)
			}
		}
		if n := len(h.be.commands()); n != 2*unaryCmds {
			t.Errorf("%s: the streamed read recorded %d commands, the unary one %d", c.name, n-unaryCmds, unaryCmds)
		}
	}

	// The quota: the found and new reads, each sent both ways, spent acme's
	// burst of 4 (the others were refused before the quota), and its clock
	// stands still: the next read is refused the same way both ways.
	h.be.reset()
	var tr metadata.MD
	_, uerr := h.gw.Get(ctx, &pb.GetRequest{Address: good}, grpc.Trailer(&tr))
	wantRateLimited(t, uerr, tr, "1000")
	if err := st.Send(&pb.GetStreamRequest{Id: 100, Get: &pb.GetRequest{Address: good}}); err != nil {
		t.Fatal(err)
	}
	r := recv(100)
	wantRateLimited(t, status.FromProto(r.GetError()).Err(), metadata.New(r.GetTrailers()), "1000")

	// A token removed from the table: the next read is Unauthenticated.
	removeToken(h, tokAlice) // not put back: the test ends here
	if err := st.Send(&pb.GetStreamRequest{Id: 101, Get: &pb.GetRequest{Address: good}}); err != nil {
		t.Fatal(err)
	}
	if r := recv(101); codes.Code(r.GetError().GetCode()) != codes.Unauthenticated {
		t.Fatalf("after the token was removed: %v, want Unauthenticated", r)
	}
}
