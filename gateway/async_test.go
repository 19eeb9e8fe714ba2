package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

// asyncEnv is a real node (Raft, Badger on disk) with a real embedded NATS
// server and ingress manager, behind a gateway served over real gRPC on
// 127.0.0.1:0 and over HTTP.
type asyncEnv struct {
	node *cluster.Node
	mgr  *ingress.Manager
	js   jetstream.JetStream
	srv  *Server
	gw   pb.GatewayClient
	http *httptest.Server
}

func startAsyncEnv(t *testing.T) *asyncEnv {
	t.Helper()
	return startAsyncEnvWith(t, nil)
}

// startAsyncEnvWith is startAsyncEnv with the gateway's config adjusted by
// tune.
func startAsyncEnvWith(t *testing.T, tune func(*Config)) *asyncEnv {
	t.Helper()
	return startAsyncEnvOpts(t, ingresstest.Options{}, tune)
}

// startAsyncEnvOpts is startAsyncEnvWith over a node and manager started
// with o (its actor code, its ingress settings).
func startAsyncEnvOpts(t *testing.T, o ingresstest.Options, tune func(*Config)) *asyncEnv {
	t.Helper()
	ie := ingresstest.Start(t, o)
	n, mgr, js := ie.Node, ie.Manager, ie.JS
	cfg := Config{Backend: n, Auth: testAuth(t), Async: mgr, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NodeID: "n1", Version: "test"}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions()...)
	srv.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.HTTPHandler())
	// Cleanups run last-in first-out: the servers stop before the manager,
	// the node and NATS they use.
	t.Cleanup(func() {
		srv.Shutdown() // ends open watches, so Stop does not wait on them
		hs.Close()
		conn.Close()
		gs.Stop()
	})
	return &asyncEnv{node: n, mgr: mgr, js: js, srv: srv, gw: pb.NewGatewayClient(conn), http: hs}
}

func (e *asyncEnv) counter(t *testing.T, addr actor.Address) (value int64, version uint64) {
	t.Helper()
	ent, _, err := e.node.Get(context.Background(), addr, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ent.State) == 0 {
		return 0, ent.Version
	}
	var st struct{ Value int64 }
	if err := json.Unmarshal(ent.State, &st); err != nil {
		t.Fatal(err)
	}
	return st.Value, ent.Version
}

func (e *asyncEnv) streamMsgs(t *testing.T, name string) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func callCtx(t *testing.T, token string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return withToken(ctx, token)
}

func TestSubmitAsync_EnqueuesAndTheCommandIsApplied(t *testing.T) {
	e := startAsyncEnv(t)
	ctx := callCtx(t, tokAlice)
	addr := actor.Address{Tenant: "acme", Workspace: "default", ActorType: "counter", EntityID: "a1"}

	req := counterReq("a1", "k1", `{"amount":5}`)
	req.CommandId = "cmd-1"
	first, err := e.gw.SubmitAsync(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.Stream != stream.IngressStream || first.Sequence == 0 || first.Duplicate || first.CommandId != "cmd-1" ||
		first.Shard != e.node.ShardOf(addr) {
		t.Fatalf("first SubmitAsync: %v", first)
	}
	testkit.EventuallyNil(t, 20*time.Second, "first command applied", func() error {
		if v, ver := e.counter(t, addr); v != 5 || ver != 1 {
			return fmt.Errorf("counter at value %d version %d, want 5 at version 1", v, ver)
		}
		return nil
	})

	// A retry with the same idempotency key stores nothing new and, even
	// if it had, would be applied once.
	again, err := e.gw.SubmitAsync(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("retry: %v, want a duplicate of sequence %d", again, first.Sequence)
	}
	// The same over HTTP: a new command, then its retry.
	body := `{"address":{"actor_type":"counter","entity_id":"a1"},"type":"cmd.counter.add","payload":{"amount":2},"idempotency_key":"k2"}`
	var hr JSONSubmitAsyncResponse
	for i, wantDup := range []bool{false, true} {
		code, b := httpDo(t, e.http.URL, http.MethodPost, "/v1/submit_async", tokAlice, body)
		if code != http.StatusOK {
			t.Fatalf("HTTP submit_async %d: %d %s", i, code, b)
		}
		if err := json.Unmarshal(b, &hr); err != nil {
			t.Fatal(err)
		}
		if hr.Stream != stream.IngressStream || hr.Sequence == 0 || hr.Duplicate != wantDup || hr.CommandID == "" {
			t.Fatalf("HTTP submit_async %d: %s", i, b)
		}
	}
	testkit.EventuallyNil(t, 20*time.Second, "both commands applied once", func() error {
		if v, ver := e.counter(t, addr); v != 7 || ver != 2 {
			return fmt.Errorf("counter at value %d version %d, want 7 at version 2", v, ver)
		}
		return nil
	})
	testkit.EventuallyNil(t, 10*time.Second, "ingress consumed", func() error {
		if m := e.streamMsgs(t, stream.IngressStream); m != 0 {
			return fmt.Errorf("%d ingress messages not consumed", m)
		}
		return nil
	})
	// Every message is consumed; a second application of one would show in
	// the counter soon after. Watch it for that long (the bound this sets).
	testkit.Consistently(t, 200*time.Millisecond, "each command applied once", func() (bool, string) {
		v, ver := e.counter(t, addr)
		return v == 7 && ver == 2, fmt.Sprintf("value %d version %d, want 7 at version 2", v, ver)
	})

	// What Submit refuses, SubmitAsync refuses the same way, before enqueueing.
	bad := counterReq("a1", "", `{"amount":1}`)
	if _, err := e.gw.SubmitAsync(ctx, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "idempotency_key is required") {
		t.Fatalf("no idempotency key: %v", err)
	}
	unknown := counterReq("a1", "k3", `{}`)
	unknown.Type = "cmd.counter.frobnicate"
	if _, err := e.gw.SubmitAsync(ctx, unknown); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `no verb "frobnicate"`) {
		t.Fatalf("unknown verb: %v", err)
	}
	if _, err := e.gw.SubmitAsync(withToken(context.Background(), "wrong-token-0123456789"), req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bad token: %v", err)
	}
	if m := e.streamMsgs(t, stream.IngressStream); m != 0 {
		t.Fatalf("%d messages enqueued by refused calls", m)
	}
}

// An out-of-scope SubmitAsync is refused before anything is enqueued, and
// recorded in the target's history exactly as Submit records it.
func TestSubmitAsync_OutOfScopeIsRefusedBeforeEnqueueingAndRecorded(t *testing.T) {
	e := startAsyncEnv(t)
	req := counterReq("b1", "kb", `{"amount":1}`)
	req.Address.Tenant, req.Address.Workspace = "beta", "ops"
	before := e.streamMsgs(t, stream.IngressStream)
	_, err := e.gw.SubmitAsync(callCtx(t, tokAlice), req)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `may not act in tenant "beta" workspace "ops"`) ||
		!strings.Contains(err.Error(), "the attempt was recorded") {
		t.Fatalf("SubmitAsync to another tenant: %v", err)
	}
	if m := e.streamMsgs(t, stream.IngressStream); m != before {
		t.Fatalf("ingress stream holds %d messages, had %d: the refused command was enqueued", m, before)
	}
	// The violation is in alice's audit stream, not in beta's history.
	recs := auditViolations(t, e, "alice", "b1")
	if len(recs) != 1 || recs[0].GetReason() != pb.Reason_REASON_VIOLATION {
		t.Fatalf("alice's audit stream: %v, want her violation against counter/b1", recs)
	}
	if v, ver := e.counter(t, actor.Address{Tenant: "beta", Workspace: "ops", ActorType: "counter", EntityID: "b1"}); v != 0 || ver != 0 {
		t.Fatalf("out-of-scope command applied: value %d version %d", v, ver)
	}
}

// The embedded server's max_payload (1 MiB) is smaller than the largest
// command Submit takes: such a command is refused with a message that says
// to use Submit, and nothing is enqueued.
// The largest valid command (a 1 MiB payload with its envelope) fits the
// embedded server's message limit, so SubmitAsync takes what Submit takes.
// (Against an external NATS with a smaller max_payload it is InvalidArgument,
// "use Submit".)
func TestSubmitAsync_LargestCommandFitsTheEmbeddedServer(t *testing.T) {
	e := startAsyncEnv(t)
	req := &pb.SubmitRequest{
		Address: &pb.Address{ActorType: "kv", EntityId: "big"}, Type: "cmd.kv.create", IdempotencyKey: "big",
		Payload: []byte(`{"doc":{"x":"` + strings.Repeat("x", actor.MaxPayloadBytes-40) + `"}}`),
	}
	resp, err := e.gw.SubmitAsync(callCtx(t, tokAlice), req, grpc.MaxCallSendMsgSize(8<<20))
	if err != nil || resp.GetSequence() == 0 {
		t.Fatalf("largest command through SubmitAsync: %v, %v", resp, err)
	}
}

type watched struct {
	seq uint64
	ev  *pb.Event
}

// collect watches with req until it has n events, then waits quiet for more
// that should not come, and returns them all.
func collect(t *testing.T, gw pb.GatewayClient, token string, req *pb.WatchRequest, n int, quiet time.Duration) []watched {
	t.Helper()
	ctx, cancel := context.WithTimeout(withToken(context.Background(), token), 20*time.Second)
	defer cancel()
	stream, err := gw.Watch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan watched)
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case got <- watched{m.GetSequence(), m.GetEvent()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var out []watched
	var timeout <-chan time.Time
	for {
		if len(out) == n && timeout == nil {
			timeout = time.After(quiet)
		}
		select {
		case w := <-got:
			out = append(out, w)
		case err := <-errc:
			t.Fatalf("watch %v ended after %d of %d events: %v", req, len(out), n, err)
		case <-timeout:
			return out
		case <-ctx.Done():
			t.Fatalf("watch %v: %d of %d events in 20s", req, len(out), n)
		}
	}
}

// checkPerEntityOrder checks that each entity's events come at versions 1, 2,
// 3... in stream order and returns how many events each entity had.
func checkPerEntityOrder(t *testing.T, evs []watched) map[string]int {
	t.Helper()
	seen := map[string]int{}
	var last uint64
	for _, w := range evs {
		if w.seq <= last {
			t.Fatalf("sequence %d after %d", w.seq, last)
		}
		last = w.seq
		a := w.ev.GetAddress()
		key := a.GetWorkspace() + "/" + a.GetActorType() + "/" + a.GetEntityId()
		seen[key]++
		if w.ev.GetVersion() != uint64(seen[key]) {
			t.Fatalf("%s: event %d has version %d (per-entity order broken)", key, seen[key], w.ev.GetVersion())
		}
	}
	return seen
}

func TestWatch_FiltersOrderAndResume(t *testing.T) {
	e := startAsyncEnv(t)
	ctx := callCtx(t, tokAlice)
	submit := func(ws, actorType, entity, verb, payload string, i int) {
		t.Helper()
		_, err := e.gw.Submit(ctx, &pb.SubmitRequest{
			Address: &pb.Address{Workspace: ws, ActorType: actorType, EntityId: entity},
			Type:    actor.CommandType(actorType, verb), Payload: []byte(payload),
			IdempotencyKey: fmt.Sprintf("%s-%s-%s-%d", ws, actorType, entity, i),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Interleaved, so per-entity order is not simply stream order.
	for i := range 5 {
		submit("w", "counter", "c1", "add", `{"amount":1}`, i)
		if i < 3 {
			submit("w", "counter", "c2", "add", `{"amount":2}`, i)
			submit("w2", "counter", "c1", "add", `{"amount":3}`, i) // another workspace
		}
	}
	submit("w", "kv", "d1", "create", `{"doc":{"a":1}}`, 0) // another actor type
	submit("w", "kv", "d1", "update", `{"doc":{"a":2}}`, 1)
	const total = 5 + 3 + 3 + 2
	testkit.EventuallyNil(t, 20*time.Second, "events published", func() error {
		if m := e.streamMsgs(t, stream.EventsStream); m != total {
			return fmt.Errorf("events stream holds %d events, want %d", m, total)
		}
		return nil
	})
	const quiet = 300 * time.Millisecond

	one := collect(t, e.gw, tokAlice, &pb.WatchRequest{Workspace: "w", ActorType: "counter", EntityId: "c1", FromBeginning: true}, 5, quiet)
	if n := checkPerEntityOrder(t, one); len(one) != 5 || n["w/counter/c1"] != 5 {
		t.Fatalf("watch of w counter/c1: %d events %v", len(one), n)
	}
	byType := collect(t, e.gw, tokAlice, &pb.WatchRequest{Workspace: "w", ActorType: "counter", FromBeginning: true}, 8, quiet)
	if n := checkPerEntityOrder(t, byType); len(byType) != 8 || n["w/counter/c1"] != 5 || n["w/counter/c2"] != 3 {
		t.Fatalf("watch of w counter: %d events %v", len(byType), n)
	}
	// The token's default tenant; workspace w; every actor type.
	all := collect(t, e.gw, tokAlice, &pb.WatchRequest{Workspace: "w", FromBeginning: true}, 10, quiet)
	if n := checkPerEntityOrder(t, all); len(all) != 10 || n["w/kv/d1"] != 2 {
		t.Fatalf("watch of workspace w: %d events %v", len(all), n)
	}
	for _, w := range all {
		if a := w.ev.GetAddress(); a.GetTenant() != "acme" || a.GetWorkspace() != "w" {
			t.Fatalf("watch of acme/w delivered an event of %v", a)
		}
	}
	updated := collect(t, e.gw, tokAlice, &pb.WatchRequest{Workspace: "w", EventType: "evt.kv.updated", FromBeginning: true}, 1, quiet)
	if len(updated) != 1 || updated[0].ev.GetType() != "evt.kv.updated" {
		t.Fatalf("watch of evt.kv.updated: %v", updated)
	}

	// Resume after the fourth event: exactly the six after it, in order.
	after := all[3].seq
	rest := collect(t, e.gw, tokAlice, &pb.WatchRequest{Workspace: "w", AfterSequence: after}, 6, quiet)
	for i, w := range rest {
		if w.seq != all[4+i].seq || w.ev.GetId() != all[4+i].ev.GetId() {
			t.Fatalf("resumed event %d: seq %d id %s, want seq %d id %s", i, w.seq, w.ev.GetId(), all[4+i].seq, all[4+i].ev.GetId())
		}
	}

	// Live: a watch resumed at the end receives what is committed next.
	wctx, cancel := context.WithTimeout(withToken(context.Background(), tokAlice), 20*time.Second)
	defer cancel()
	stream, err := e.gw.Watch(wctx, &pb.WatchRequest{Workspace: "w", ActorType: "counter", EntityId: "c2", AfterSequence: all[len(all)-1].seq})
	if err != nil {
		t.Fatal(err)
	}
	submit("w", "counter", "c2", "add", `{"amount":2}`, 99)
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.GetEvent().GetAddress().GetEntityId() != "c2" || m.GetEvent().GetVersion() != 4 || m.GetSequence() <= all[len(all)-1].seq {
		t.Fatalf("live event: %v", m)
	}
	// Shutdown ends the stream with Unavailable, telling the client how to resume.
	e.srv.Shutdown()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "after_sequence") {
		t.Fatalf("watch at shutdown: %v, want Unavailable saying how to resume", err)
	}
}

func TestWatch_OverHTTPStreamsNDJSON(t *testing.T) {
	e := startAsyncEnv(t)
	ctx := callCtx(t, tokAlice)
	for i := range 3 {
		if _, err := e.gw.Submit(ctx, counterReq("h1", fmt.Sprint("k", i), `{"amount":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := http.NewRequestWithContext(rctx, http.MethodGet, e.http.URL+"/v1/watch?actor_type=counter&entity_id=h1&from_beginning", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+tokAlice)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("GET /v1/watch: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	for v := uint64(1); v <= 3; v++ {
		if !sc.Scan() {
			t.Fatalf("stream ended before event %d: %v", v, sc.Err())
		}
		var line JSONWatchEvent
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if line.Sequence == 0 || line.Event == nil || line.Event.Version != v || line.Event.Type != "evt.counter.added" ||
			line.Event.Address.EntityID != "h1" || !strings.Contains(string(line.Event.Payload), `"value":`) {
			t.Fatalf("line %d: %s", v, sc.Text())
		}
	}

	for _, tc := range []struct {
		query, token string
		code         int
		want         string
	}{
		{"?entity_id=h1", tokAlice, http.StatusBadRequest, "needs actor_type"},
		{"?actor_typ=counter", tokAlice, http.StatusBadRequest, `unknown query parameter "actor_typ"`},
		{"?after_sequence=-1", tokAlice, http.StatusBadRequest, "not a sequence number"},
		{"?tenant=beta", tokAlice, http.StatusForbidden, `may not watch tenant "beta"`},
		{"", "", http.StatusUnauthorized, "missing bearer token"},
	} {
		code, b := httpDo(t, e.http.URL, http.MethodGet, "/v1/watch"+tc.query, tc.token, "")
		var je JSONError
		if err := json.Unmarshal(b, &je); err != nil || code != tc.code || !strings.Contains(je.Message, tc.want) {
			t.Errorf("GET /v1/watch%s: %d %s, want %d with %q", tc.query, code, b, tc.code, tc.want)
		}
	}
	if code, _ := httpDo(t, e.http.URL, http.MethodPost, "/v1/watch", tokAlice, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/watch: %d", code)
	}
}

// httpDo makes one HTTP call against base and returns the status and body.
func httpDo(t *testing.T, base, method, path, token, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// recvErr opens a watch and returns the error that ends it.
func recvErr(t *testing.T, gw pb.GatewayClient, token string, req *pb.WatchRequest) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(withToken(context.Background(), token), 10*time.Second)
	defer cancel()
	stream, err := gw.Watch(ctx, req)
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func TestWatch_RefusesOutOfScopeAndBadFilters(t *testing.T) {
	e := startAsyncEnv(t)
	for _, tc := range []struct {
		name  string
		token string
		req   *pb.WatchRequest
		code  codes.Code
		want  string
	}{
		{"another tenant", tokAlice, &pb.WatchRequest{Tenant: "beta", Workspace: "ops"}, codes.PermissionDenied, `alice (user) may not watch tenant "beta" workspace "ops"`},
		{"another workspace of a scoped token", tokOps, &pb.WatchRequest{Tenant: "beta", Workspace: "dev"}, codes.PermissionDenied, `may not watch tenant "beta" workspace "dev"`},
		{"one entity of another tenant", tokAlice, &pb.WatchRequest{Tenant: "beta", Workspace: "ops", ActorType: "counter", EntityId: "x"}, codes.PermissionDenied, "the attempt was recorded"},
		{"entity without actor type", tokAlice, &pb.WatchRequest{EntityId: "c1"}, codes.InvalidArgument, `entity_id "c1" needs actor_type`},
		{"bad entity id", tokAlice, &pb.WatchRequest{ActorType: "counter", EntityId: "a/b"}, codes.InvalidArgument, "entity_id"},
		{"bad workspace", tokAlice, &pb.WatchRequest{Workspace: "a b"}, codes.InvalidArgument, "workspace"},
		{"unknown actor type", tokAlice, &pb.WatchRequest{ActorType: "nosuch"}, codes.NotFound, `unknown actor type "nosuch"`},
		{"event type of another actor", tokAlice, &pb.WatchRequest{ActorType: "counter", EventType: "evt.kv.created"}, codes.InvalidArgument, "not an event of actor type"},
		{"event type without prefix", tokAlice, &pb.WatchRequest{EventType: "added"}, codes.InvalidArgument, "evt.<actor_type>.<name>"},
		{"after and from beginning", tokAlice, &pb.WatchRequest{AfterSequence: 3, FromBeginning: true}, codes.InvalidArgument, "not both"},
		{"no token", "", &pb.WatchRequest{}, codes.Unauthenticated, "missing bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := recvErr(t, e.gw, tc.token, tc.req)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("%v: %v, want %v with %q", tc.req, err, tc.code, tc.want)
			}
		})
	}
	// The refused watch of one entity is in the offender's audit stream.
	if recs := auditViolations(t, e, "alice", "x"); len(recs) != 1 || recs[0].GetReason() != pb.Reason_REASON_VIOLATION {
		t.Fatalf("alice's audit stream: %v, want her violation against counter/x", recs)
	}
}

// auditViolations reads principal's audit streams on every shard (the
// ingresstest cluster has 2) and returns its violations against entity.
func auditViolations(t *testing.T, e *asyncEnv, principal, entity string) []*pb.Rejection {
	t.Helper()
	var out []*pb.Rejection
	for s := range uint32(2) {
		hist, err := e.gw.History(callCtx(t, tokAudit), &pb.HistoryRequest{
			Address: pb.FromAddress(engine.AuditAddress(principal, s, 2)), IncludeRejections: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range hist.GetRecords() {
			if rj := r.GetRejection(); rj != nil && rj.GetPrincipal().GetId() == principal && rj.GetAddress().GetEntityId() == entity {
				out = append(out, rj)
			}
		}
	}
	return out
}

// Without NATS (Config.Async nil: the node's wiring leaves it unset rather
// than store a nil *ingress.Manager in it) both calls say so, over gRPC and
// HTTP.
func TestAsync_UnimplementedWithoutNATS(t *testing.T) {
	for name, async := range map[string]AsyncBackend{"nil": nil} {
		t.Run(name, func(t *testing.T) {
			h := newHarnessWith(t, func(c *Config) { c.Async = async })
			ctx := callCtx(t, tokAlice)
			_, err := h.gw.SubmitAsync(ctx, counterReq("c1", "k1", `{"amount":1}`))
			if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "--nats-addr off") {
				t.Fatalf("SubmitAsync: %v", err)
			}
			if err := recvErr(t, h.gw, tokAlice, &pb.WatchRequest{}); status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "--nats-addr off") {
				t.Fatalf("Watch: %v", err)
			}
			if n := len(h.be.commands()); n != 0 {
				t.Fatalf("%d commands reached the backend", n)
			}
			code, b := httpCall(t, h, http.MethodPost, "/v1/submit_async", tokAlice, submitJSON(t, counterReq("c1", "k1", `{"amount":1}`)))
			if code != http.StatusNotImplemented || !strings.Contains(string(b), `"code":"unimplemented"`) {
				t.Fatalf("POST /v1/submit_async: %d %s", code, b)
			}
			code, b = httpCall(t, h, http.MethodGet, "/v1/watch", tokAlice, "")
			if code != http.StatusNotImplemented {
				t.Fatalf("GET /v1/watch: %d %s", code, b)
			}
		})
	}
}

// scriptedAsync is an AsyncBackend whose Enqueue fails with err, and whose
// readiness is never reached when notReady.
type scriptedAsync struct {
	err      error
	notReady bool
}

func (s *scriptedAsync) Enqueue(context.Context, actor.Command) (ingress.Enqueued, error) {
	return ingress.Enqueued{}, s.err
}
func (s *scriptedAsync) Watch(ctx context.Context, _ ingress.WatchFilter, _ func(*pb.WatchEvent) error) error {
	<-ctx.Done()
	return ctx.Err()
}
func (s *scriptedAsync) Ready() <-chan struct{} {
	c := make(chan struct{})
	if !s.notReady {
		close(c)
	}
	return c
}

// Enqueue failures say whether the command may have been stored: only
// answers that prove it was not are NOT_APPLIED.
func TestSubmitAsync_EnqueueErrors(t *testing.T) {
	defer func(d time.Duration) { asyncReadyWait = d }(asyncReadyWait)
	asyncReadyWait = 50 * time.Millisecond
	for _, tc := range []struct {
		name   string
		async  *scriptedAsync
		code   codes.Code
		reason string
		want   string
	}{
		{"no stream", &scriptedAsync{err: fmt.Errorf("ingress: publish: %w", jetstream.ErrNoStreamResponse)}, codes.Unavailable, ReasonNotApplied, "nothing was enqueued"},
		{"stream refused", &scriptedAsync{err: fmt.Errorf("ingress: publish: nats: %w", &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"})}, codes.Unavailable, ReasonNotApplied, "maximum messages exceeded"},
		{"timeout", &scriptedAsync{err: fmt.Errorf("ingress: publish: %w", context.DeadlineExceeded)}, codes.Unavailable, ReasonOutcomeUnknown, OutcomeUnknownPrefix},
		{"connection closed", &scriptedAsync{err: fmt.Errorf("ingress: publish: %w", nats.ErrConnectionClosed)}, codes.Unavailable, ReasonOutcomeUnknown, "same idempotency_key"},
		{"too large", &scriptedAsync{err: fmt.Errorf("ingress: publish: %w", nats.ErrMaxPayload)}, codes.InvalidArgument, "", "use Submit"},
		{"streams not ready", &scriptedAsync{notReady: true}, codes.Unavailable, ReasonNotApplied, "not ready yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessWith(t, func(c *Config) { c.Async = tc.async })
			ctx, cancel := context.WithTimeout(withToken(context.Background(), tokAlice), 500*time.Millisecond)
			defer cancel()
			_, err := h.gw.SubmitAsync(ctx, counterReq("c1", "k1", `{"amount":1}`))
			st := status.Convert(err)
			if st.Code() != tc.code || infoReason(st) != tc.reason || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("%v (reason %q), want %v %q with %q", err, infoReason(st), tc.code, tc.reason, tc.want)
			}
		})
	}
}

// newHarnessWith is newHarness with the config adjusted by tune.
func newHarnessWith(t *testing.T, tune func(*Config)) *harness {
	t.Helper()
	be := newFakeBackend(t)
	cfg := Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NodeID: "n1", Version: "test"}
	tune(&cfg)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions()...)
	srv.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.HTTPHandler())
	t.Cleanup(func() {
		hs.Close()
		conn.Close()
		gs.Stop()
		srv.Shutdown() // stops the quota refresher, if any
	})
	return &harness{be: be, srv: srv, gw: pb.NewGatewayClient(conn), conn: conn, http: hs}
}

// A node is not ready until its JetStream streams exist, so a probe does not
// send it SubmitAsync calls it can only refuse; once they exist it stays
// ready (SubmitAsync reports later NATS trouble itself, and Submit does not
// need NATS).
func TestReady_WaitsForTheIngressStreams(t *testing.T) {
	async := &gatedAsync{ready: make(chan struct{})}
	h := newHarnessWith(t, func(c *Config) { c.Async = async })
	if code, resp := httpCall(t, h, "GET", "/readyz", "", ""); code != 503 || !strings.Contains(string(resp), "JetStream streams") {
		t.Fatalf("readyz before the streams exist: %d %s", code, resp)
	}
	if h.srv.UpdateHealth(context.Background()) {
		t.Fatal("gRPC health SERVING before the streams exist")
	}
	close(async.ready)
	if code, resp := httpCall(t, h, "GET", "/readyz", "", ""); code != 200 {
		t.Fatalf("readyz once the streams exist: %d %s", code, resp)
	}
	if !h.srv.UpdateHealth(context.Background()) {
		t.Fatal("gRPC health NOT_SERVING once the streams exist")
	}
}

// gatedAsync is an AsyncBackend whose streams exist once ready is closed.
type gatedAsync struct {
	scriptedAsync
	ready chan struct{}
}

func (g *gatedAsync) Ready() <-chan struct{} { return g.ready }
