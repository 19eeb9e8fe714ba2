package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
)

func counterReq(entity, key string, payload string) *pb.SubmitRequest {
	return &pb.SubmitRequest{
		Address:        &pb.Address{ActorType: "counter", EntityId: entity},
		Type:           "cmd.counter.add",
		Payload:        []byte(payload),
		IdempotencyKey: key,
	}
}

// bigPayload is valid JSON of exactly n bytes.
func bigPayload(n int) string {
	head, tail := `{"amount":1,"pad":"`, `"}`
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

// submitCase is one bad input. The same table runs over gRPC and HTTP.
type submitCase struct {
	name  string
	token string
	req   *pb.SubmitRequest
	// httpBody replaces the JSON rendering of req for HTTP (for input that
	// the JSON mirror cannot express, such as a malformed payload).
	httpBody string
	code     codes.Code
	httpCode int
	msg      []string // substrings the message must contain
	// recorded is how many commands must reach Backend.Submit: 1 only for
	// the violation-recording command.
	recorded int
}

func badSubmits() []submitCase {
	withOBO := func(r *pb.SubmitRequest, p *pb.Principal) *pb.SubmitRequest { r.OnBehalfOf = p; return r }
	withAddr := func(r *pb.SubmitRequest, tenant, ws string) *pb.SubmitRequest {
		r.Address.Tenant, r.Address.Workspace = tenant, ws
		return r
	}
	return []submitCase{
		{
			name: "malformed JSON payload", token: tokAlice, req: counterReq("c1", "k", `{"amount": 1`),
			httpBody: `{"address":{"actor_type":"counter","entity_id":"c1"},"type":"cmd.counter.add","payload":{"amount": 1,"idempotency_key":"k"}`,
			code:     codes.InvalidArgument, httpCode: 400, msg: []string{"not valid JSON"},
		},
		{
			name: "missing idempotency key", token: tokAlice, req: counterReq("c1", "", `{"amount":1}`),
			code: codes.InvalidArgument, httpCode: 400, msg: []string{"idempotency_key is required: retries must reuse the same key"},
		},
		{
			name: "missing entity id", token: tokAlice, req: counterReq("", "k", `{"amount":1}`),
			code: codes.InvalidArgument, httpCode: 400, msg: []string{"entity_id is required"},
		},
		{
			name: "entity id with a slash", token: tokAlice, req: counterReq("a/b", "k", `{"amount":1}`),
			code: codes.InvalidArgument, httpCode: 400, msg: []string{"entity_id", "'/'"},
		},
		{
			name: "type does not match address", token: tokAlice,
			req:  &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, Type: "cmd.lock.acquire", IdempotencyKey: "k"},
			code: codes.InvalidArgument, httpCode: 400, msg: []string{`command type "cmd.lock.acquire" does not match actor type "counter"`},
		},
		{
			name: "unknown actor type", token: tokAlice,
			req:  &pb.SubmitRequest{Address: &pb.Address{ActorType: "nope", EntityId: "c1"}, Type: "cmd.nope.add", IdempotencyKey: "k"},
			code: codes.NotFound, httpCode: 404, msg: []string{`unknown actor type "nope"; registered: counter, lock`},
		},
		{
			name: "unknown verb", token: tokAlice,
			req:  &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, Type: "cmd.counter.sub", Payload: []byte(`{"amount":1}`), IdempotencyKey: "k"},
			code: codes.InvalidArgument, httpCode: 400, msg: []string{`actor type "counter" has no verb "sub"; verbs: add`},
		},
		{
			name: "reserved timer verb", token: tokAlice,
			req:  &pb.SubmitRequest{Address: &pb.Address{ActorType: "lock", EntityId: "l1"}, Type: "cmd.lock.timer", IdempotencyKey: "k"},
			code: codes.InvalidArgument, httpCode: 400, msg: []string{`verb "timer" is reserved`, "acquire, release"},
		},
		{
			name: "reserved read verb", token: tokAlice,
			req:  &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, Type: "cmd.counter.read", IdempotencyKey: "k"},
			code: codes.InvalidArgument, httpCode: 400, msg: []string{`verb "read" is reserved`},
		},
		{
			name: "payload rejected by the actor's validator", token: tokAlice, req: counterReq("c1", "k", `{"amount":0}`),
			code: codes.InvalidArgument, httpCode: 400, msg: []string{"amount must be a non-zero integer"},
		},
		{
			name: "oversized payload", token: tokAlice, req: counterReq("c1", "k", bigPayload(actor.MaxPayloadBytes+1)),
			code: codes.InvalidArgument, httpCode: 400, msg: []string{fmt.Sprintf("payload is %d bytes; the limit is %d", actor.MaxPayloadBytes+1, actor.MaxPayloadBytes)},
		},
		{
			name: "on_behalf_of from a non-system token", token: tokAlice,
			req:  withOBO(counterReq("c1", "k", `{"amount":1}`), &pb.Principal{Id: "bob", Type: "user"}),
			code: codes.PermissionDenied, httpCode: 403, msg: []string{"on_behalf_of is only for system principals", "alice is a user"},
		},
		{
			name: "bad principal type in on_behalf_of", token: tokSystem,
			req:  withOBO(counterReq("c1", "k", `{"amount":1}`), &pb.Principal{Id: "bob", Type: "robot"}),
			code: codes.InvalidArgument, httpCode: 400, msg: []string{`on_behalf_of: principal type "robot" is not one of user, service, agent, system`},
		},
		{
			name: "missing token", token: "", req: counterReq("c1", "k", `{"amount":1}`),
			code: codes.Unauthenticated, httpCode: 401, msg: []string{"missing bearer token: send the header Authorization: Bearer <token>"},
		},
		{
			name: "wrong token", token: "not-a-real-token-at-all", req: counterReq("c1", "k", `{"amount":1}`),
			code: codes.Unauthenticated, httpCode: 401, msg: []string{"unknown token"},
		},
		{
			name: "token for tenant acme addressing tenant other", token: tokAlice,
			req:  withAddr(counterReq("c1", "k", `{"amount":1}`), "other", "w"),
			code: codes.PermissionDenied, httpCode: 403,
			msg:      []string{`may not act in tenant "other" workspace "w"`, `this token may use: tenant "acme" workspace "*"`},
			recorded: 1,
		},
		{
			name: "token scoped to one workspace addressing another", token: tokOps,
			req:  withAddr(counterReq("c1", "k", `{"amount":1}`), "beta", "dev"),
			code: codes.PermissionDenied, httpCode: 403,
			msg:      []string{`tenant "beta" workspace "dev"`, `tenant "beta" workspace "ops"`},
			recorded: 1,
		},
	}
}

// checkRecorded asserts that nothing reached Backend.Submit, or, for a scope
// violation, exactly the caller's command with its own security context.
func checkRecorded(t *testing.T, be *fakeBackend, tc submitCase) {
	t.Helper()
	cmds := be.commands()
	if len(cmds) != tc.recorded {
		t.Fatalf("%d commands reached Backend.Submit, want %d: %+v", len(cmds), tc.recorded, cmds)
	}
	if tc.recorded == 1 {
		c := cmds[0]
		if c.Address.Tenant != tc.req.Address.Tenant || c.Type != tc.req.Type || c.IdempotencyKey != tc.req.IdempotencyKey {
			t.Fatalf("recorded command %+v is not the caller's", c)
		}
		if c.Security.Allows(c.Address.Tenant, c.Address.Workspace) {
			t.Fatalf("recorded command's security %+v allows its address; the engine would not record a violation", c.Security)
		}
	}
}

func TestSubmitRejectsBadInputOverGRPC(t *testing.T) {
	h := newHarness(t)
	for _, tc := range badSubmits() {
		t.Run(tc.name, func(t *testing.T) {
			h.be.reset()
			_, err := h.gw.Submit(withToken(context.Background(), tc.token), tc.req)
			st := status.Convert(err)
			t.Logf("%v: %s", st.Code(), st.Message())
			if st.Code() != tc.code {
				t.Fatalf("code %v (%q), want %v", st.Code(), st.Message(), tc.code)
			}
			for _, m := range tc.msg {
				if !strings.Contains(st.Message(), m) {
					t.Errorf("message %q does not contain %q", st.Message(), m)
				}
			}
			checkRecorded(t, h.be, tc)
		})
	}
}

func TestSubmitRejectsBadInputOverHTTP(t *testing.T) {
	h := newHarness(t)
	for _, tc := range badSubmits() {
		t.Run(tc.name, func(t *testing.T) {
			h.be.reset()
			body := tc.httpBody
			if body == "" {
				body = submitJSON(t, tc.req)
			}
			code, resp := httpCall(t, h, "POST", "/v1/submit", tc.token, body)
			if code != tc.httpCode {
				t.Fatalf("HTTP %d %s, want %d", code, resp, tc.httpCode)
			}
			var e JSONError
			if err := json.Unmarshal(resp, &e); err != nil {
				t.Fatalf("error body %s: %v", resp, err)
			}
			if want := codeNames[tc.code]; e.Code != want {
				t.Errorf("code %q, want %q", e.Code, want)
			}
			if tc.httpBody == "" {
				for _, m := range tc.msg {
					if !strings.Contains(e.Message, m) {
						t.Errorf("message %q does not contain %q", e.Message, m)
					}
				}
			} else if !strings.Contains(e.Message, "not valid JSON") {
				t.Errorf("message %q does not say the body is not valid JSON", e.Message)
			}
			checkRecorded(t, h.be, tc)
		})
	}
}

func submitJSON(t *testing.T, r *pb.SubmitRequest) string {
	t.Helper()
	in := JSONSubmitRequest{
		Address: addressJSON(r.Address), Type: r.Type, IdempotencyKey: r.IdempotencyKey,
		ExpectedVersion: r.ExpectedVersion, CommandID: r.CommandId,
	}
	if len(r.Payload) > 0 {
		in.Payload = r.Payload
	}
	if r.OnBehalfOf != nil {
		in.OnBehalfOf = principalJSON(r.OnBehalfOf)
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func httpCall(t *testing.T, h *harness, method, path, token, body string) (int, []byte) {
	t.Helper()
	code, _, b := httpCallHeaders(t, h, method, path, token, body, nil)
	return code, b
}

func httpCallHeaders(t *testing.T, h *harness, method, path, token, body string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, h.http.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func TestSubmitAcceptedFillsCommand(t *testing.T) {
	h := newHarness(t)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := metadata.AppendToOutgoingContext(withToken(context.Background(), tokAlice), "traceparent", tp, "tracestate", "k=v")
	resp, err := h.gw.Submit(ctx, counterReq("c1", "key-1", `{"amount":5}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED || resp.GetShard() != 2 {
		t.Fatalf("response %v", resp)
	}
	cmds := h.be.commands()
	if len(cmds) != 1 {
		t.Fatalf("%d commands submitted", len(cmds))
	}
	c := cmds[0]
	if c.Address != (actor.Address{Tenant: "acme", Workspace: DefaultWorkspace, ActorType: "counter", EntityID: "c1"}) {
		t.Errorf("address %+v: tenant/workspace not filled from the token", c.Address)
	}
	if len(c.ID) != 32 || c.IdempotencyKey != "key-1" {
		t.Errorf("id %q key %q", c.ID, c.IdempotencyKey)
	}
	if c.Security.Principal != (actor.Principal{ID: "alice", Type: actor.PrincipalUser}) || len(c.Security.Scopes) != 1 {
		t.Errorf("security %+v", c.Security)
	}
	// The otelgrpc handler continues the caller's trace: same trace id,
	// and (with the no-op tracer) the caller's span as parent.
	if !strings.HasPrefix(c.TraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-") {
		t.Errorf("traceparent %q does not continue the caller's trace", c.TraceParent)
	}
	if c.TraceState != "k=v" {
		t.Errorf("tracestate %q", c.TraceState)
	}
}

func TestSubmitWorkspaceDefaultsPerTenant(t *testing.T) {
	h := newHarness(t)
	req := counterReq("c1", "k", `{"amount":1}`)
	req.Address.Tenant = "beta"
	if _, err := h.gw.Submit(withToken(context.Background(), tokOps), req); err != nil {
		t.Fatal(err)
	}
	if got := h.be.commands()[0].Address.Workspace; got != "ops" {
		t.Fatalf("workspace %q, want ops (the token's only workspace in beta)", got)
	}
}

func TestSubmitOnBehalfOfFromSystem(t *testing.T) {
	h := newHarness(t)
	req := counterReq("c1", "k", `{"amount":1}`)
	req.OnBehalfOf = &pb.Principal{Id: "bob", Type: "agent"}
	req.CommandId = "cmd-1"
	if _, err := h.gw.Submit(withToken(context.Background(), tokSystem), req); err != nil {
		t.Fatal(err)
	}
	c := h.be.commands()[0]
	if c.Security.Principal != (actor.Principal{ID: "bob", Type: actor.PrincipalAgent}) || c.ID != "cmd-1" {
		t.Fatalf("command %+v", c)
	}
	if !c.Security.Allows("acme", "x") {
		t.Fatalf("scopes %+v are not the system token's", c.Security.Scopes)
	}
}

// TestSubmitOutcomes checks the mapping of backend results and errors.
func TestSubmitOutcomes(t *testing.T) {
	h := newHarness(t)
	conflict := actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonConflict, Code: "version_conflict", Message: "expected version 3, entity is at version 4", Version: 4}
	business := actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonBusiness, Code: "overflow", Message: "too big"}
	cases := []struct {
		name    string
		res     actor.Result
		err     error
		code    codes.Code
		msg     string
		reason  string // ErrorInfo reason
		trailer bool
	}{
		{name: "conflict is a result", res: conflict, code: codes.OK},
		{name: "business rejection is a result", res: business, code: codes.OK},
		{name: "engine violation", res: actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonViolation, Message: "principal x may not"}, code: codes.PermissionDenied, msg: "principal x may not"},
		{name: "engine invalid", res: actor.Result{Status: actor.StatusRejected, Reason: actor.ReasonInvalid, Message: "bad field"}, code: codes.InvalidArgument, msg: "bad field"},
		{name: "not leader", err: fmt.Errorf("forward: %w", outcome.ErrNotLeader), code: codes.Unavailable, msg: "NOT applied", reason: ReasonNotApplied},
		{name: "closed", err: outcome.ErrClosed, code: codes.Unavailable, msg: "NOT applied", reason: ReasonNotApplied},
		{name: "overloaded", err: outcome.ErrOverloaded, code: codes.ResourceExhausted, msg: "NOT applied", reason: ReasonOverloaded},
		{name: "unknown outcome", err: outcome.ErrUnknownOutcome, code: codes.Unavailable, msg: OutcomeUnknownPrefix, reason: ReasonOutcomeUnknown, trailer: true},
		{name: "deadline after proposing", err: context.DeadlineExceeded, code: codes.Unavailable, msg: OutcomeUnknownPrefix, reason: ReasonOutcomeUnknown, trailer: true},
		{name: "halted", err: outcome.ErrHalted, code: codes.Internal, msg: "halted", reason: outcome.ReasonHalted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.be.submit = func(int, actor.Command) (actor.Result, error) { return tc.res, tc.err }
			var trailer metadata.MD
			resp, err := h.gw.Submit(withToken(context.Background(), tokAlice), counterReq("c1", "k", `{"amount":1}`), grpc.Trailer(&trailer))
			st := status.Convert(err)
			if st.Code() != tc.code {
				t.Fatalf("code %v %q, want %v", st.Code(), st.Message(), tc.code)
			}
			if tc.code == codes.OK {
				if resp.GetResult().GetReason() != pb.Reason(tc.res.Reason) || resp.GetResult().GetMessage() != tc.res.Message {
					t.Fatalf("result %v", resp.GetResult())
				}
				return
			}
			if !strings.Contains(st.Message(), tc.msg) {
				t.Errorf("message %q does not contain %q", st.Message(), tc.msg)
			}
			if tc.msg == OutcomeUnknownPrefix && !strings.HasPrefix(st.Message(), OutcomeUnknownPrefix) {
				t.Errorf("message %q does not start with %q", st.Message(), OutcomeUnknownPrefix)
			}
			if got := infoReason(st); got != tc.reason {
				t.Errorf("ErrorInfo reason %q, want %q", got, tc.reason)
			}
			if got := strings.Join(trailer.Get(OutcomeTrailer), ","); (got == OutcomeUnknown) != tc.trailer {
				t.Errorf("trailer %s=%q", OutcomeTrailer, got)
			}
		})
	}
	h.be.submit = nil
}

func infoReason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

func TestGetAndHistory(t *testing.T) {
	h := newHarness(t)
	ctx := withToken(context.Background(), tokAlice)
	addr := &pb.Address{ActorType: "counter", EntityId: "c1"}

	h.be.entity, h.be.applied = engine.Entity{Version: 3, State: []byte(`{"value":7}`)}, 42
	g, err := h.gw.Get(ctx, &pb.GetRequest{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	if !g.Found || g.Version != 3 || string(g.State) != `{"value":7}` || g.AppliedIndex != 42 || g.Address.Tenant != "acme" {
		t.Fatalf("get %v", g)
	}
	h.be.entity = engine.Entity{}
	if g, err = h.gw.Get(ctx, &pb.GetRequest{Address: addr}); err != nil || g.Found {
		t.Fatalf("get of a new entity: %v %v (found must be false at version 0)", g, err)
	}

	next := engine.Position{Index: 9, Ordinal: 2}
	h.be.history = func(after engine.Position, limit int) ([]*pb.HistoryRecord, engine.Position, bool, error) {
		return []*pb.HistoryRecord{{Record: &pb.HistoryRecord_Event{Event: &pb.Event{Id: "e1", Payload: []byte(`{"a":1}`)}}}}, next, after == (engine.Position{}), nil
	}
	hr, err := h.gw.History(ctx, &pb.HistoryRequest{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	if h.be.lastLimit != DefaultPageSize || hr.NextPageToken == "" || len(hr.Records) != 1 {
		t.Fatalf("history %v limit %d", hr, h.be.lastLimit)
	}
	hr2, err := h.gw.History(ctx, &pb.HistoryRequest{Address: addr, PageToken: hr.NextPageToken, PageSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	if h.be.lastAfter != next || h.be.lastLimit != 5 || hr2.NextPageToken != "" {
		t.Fatalf("second page: after %+v limit %d next %q", h.be.lastAfter, h.be.lastLimit, hr2.NextPageToken)
	}
	if len(h.be.commands()) != 0 {
		t.Fatal("reads submitted commands")
	}
}

func TestReadsRejectBadInput(t *testing.T) {
	h := newHarness(t)
	good := &pb.Address{ActorType: "counter", EntityId: "c1"}
	cases := []struct {
		name     string
		token    string
		get      *pb.GetRequest
		hist     *pb.HistoryRequest
		code     codes.Code
		msg      string
		recorded bool
	}{
		{name: "get missing token", get: &pb.GetRequest{Address: good}, code: codes.Unauthenticated, msg: "missing bearer token"},
		{name: "get missing entity", token: tokAlice, get: &pb.GetRequest{Address: &pb.Address{ActorType: "counter"}}, code: codes.InvalidArgument, msg: "entity_id is required"},
		{name: "get unknown type", token: tokAlice, get: &pb.GetRequest{Address: &pb.Address{ActorType: "nope", EntityId: "x"}}, code: codes.NotFound, msg: "registered: counter, lock"},
		{name: "get other tenant", token: tokAlice, get: &pb.GetRequest{Address: &pb.Address{Tenant: "other", Workspace: "w", ActorType: "counter", EntityId: "c1"}}, code: codes.PermissionDenied, msg: `tenant "other"`, recorded: true},
		{name: "history other tenant", token: tokAlice, hist: &pb.HistoryRequest{Address: &pb.Address{Tenant: "other", Workspace: "w", ActorType: "counter", EntityId: "c1"}}, code: codes.PermissionDenied, msg: `tenant "other"`, recorded: true},
		{name: "history page too big", token: tokAlice, hist: &pb.HistoryRequest{Address: good, PageSize: MaxPageSize + 1}, code: codes.InvalidArgument, msg: "page_size is 1001; the limit is 1000"},
		{name: "history bad page token", token: tokAlice, hist: &pb.HistoryRequest{Address: good, PageToken: "!!"}, code: codes.InvalidArgument, msg: "page_token is malformed"},
		{name: "history truncated page token", token: tokAlice, hist: &pb.HistoryRequest{Address: good, PageToken: EncodePageToken(engine.Position{Index: 1})[:8]}, code: codes.InvalidArgument, msg: "page_token is malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.be.reset()
			ctx := withToken(context.Background(), tc.token)
			var err error
			if tc.get != nil {
				_, err = h.gw.Get(ctx, tc.get)
			} else {
				_, err = h.gw.History(ctx, tc.hist)
			}
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			cmds := h.be.commands()
			if !tc.recorded {
				if len(cmds) != 0 {
					t.Fatalf("submitted %+v", cmds)
				}
				return
			}
			if len(cmds) != 1 {
				t.Fatalf("%d commands recorded the violation, want 1", len(cmds))
			}
			c := cmds[0]
			if c.Type != "cmd.counter.read" || c.Address.Tenant != "other" || c.Security.Principal.ID != "alice" || c.IdempotencyKey == "" {
				t.Fatalf("violation record %+v", c)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("violation record does not validate in the engine: %v", err)
			}
		})
	}
}

func TestPageTokenRoundTrip(t *testing.T) {
	for _, p := range []engine.Position{{}, {Index: 1, Ordinal: 1}, {Index: 1<<64 - 1, Ordinal: 1<<32 - 1}} {
		got, err := DecodePageToken(EncodePageToken(p))
		if err != nil || got != p {
			t.Fatalf("%+v -> %+v, %v", p, got, err)
		}
	}
}

func TestStatusHealthReflection(t *testing.T) {
	h := newHarness(t)
	if _, err := h.gw.Status(context.Background(), &pb.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("status without a token: %v", err)
	}
	st, err := h.gw.Status(withToken(context.Background(), tokAlice), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.NodeId != "n1" || st.Version != "test" || strings.Join(st.ActorTypes, ",") != "counter,lock" {
		t.Fatalf("status %v", st)
	}

	hc := healthpb.NewHealthClient(h.conn)
	for _, svc := range []string{"", pb.Gateway_ServiceDesc.ServiceName} {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q: %v %v", svc, r, err)
		}
	}
	// A leaderless shard degrades the node, which stays in service; a
	// halted replica of its own fails it, and every service says so.
	for _, c := range []struct {
		name   string
		status *pb.StatusResponse
		want   healthpb.HealthCheckResponse_ServingStatus
	}{
		{"a leaderless shard", &pb.StatusResponse{NodeId: "n1", Shards: []*pb.ShardStatus{{Shard: 0, Leader: "n1"}, {Shard: 1}}}, healthpb.HealthCheckResponse_SERVING},
		{"a halted replica", &pb.StatusResponse{NodeId: "n1", Shards: []*pb.ShardStatus{
			{Shard: 0, Leader: "n1", NodeId: "n1", Role: "Leader"}, {Shard: 1, Leader: "n2", NodeId: "n1", Halted: true, HaltError: "disk"}}}, healthpb.HealthCheckResponse_NOT_SERVING},
		{"the status restored", nil, healthpb.HealthCheckResponse_SERVING},
	} {
		h.be.status = c.status
		if got := h.srv.UpdateHealth(context.Background()); got != (c.want == healthpb.HealthCheckResponse_SERVING) {
			t.Fatalf("%s: UpdateHealth = %v", c.name, got)
		}
		for _, svc := range []string{"", pb.Gateway_ServiceDesc.ServiceName} {
			r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || r.Status != c.want {
				t.Fatalf("%s: health %q = %v %v, want %v", c.name, svc, r, err, c.want)
			}
		}
	}

	rc, err := rpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "rhizon.v1.Gateway") {
		t.Fatalf("reflection lists %v", names)
	}
	rc.CloseSend()
}

func TestHTTPRoundTrip(t *testing.T) {
	h := newHarness(t)
	const body = `{"address":{"actor_type":"counter","entity_id":"c1"},"type":"cmd.counter.add","payload":{"amount":5},"idempotency_key":"k1"}`
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	code, _, resp := httpCallHeaders(t, h, "POST", "/v1/submit", tokAlice, body, map[string]string{"traceparent": tp})
	if code != 200 {
		t.Fatalf("submit: %d %s", code, resp)
	}
	var sr JSONSubmitResponse
	if err := json.Unmarshal(resp, &sr); err != nil {
		t.Fatal(err)
	}
	if sr.Result.Status != "accepted" || len(sr.Result.Events) != 1 || string(sr.Result.Events[0].Payload) != `{"amount":5}` || string(sr.Result.Reply) != `{"ok":true}` {
		t.Fatalf("submit response %s", resp)
	}
	c := h.be.commands()[0]
	if string(c.Payload) != `{"amount":5}` || c.Address.Tenant != "acme" || !strings.Contains(c.TraceParent, "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Fatalf("command %+v", c)
	}

	h.be.entity = engine.Entity{Version: 1, State: []byte(`{"value":5}`)}
	code, resp = httpCall(t, h, "POST", "/v1/get", tokAlice, `{"address":{"actor_type":"counter","entity_id":"c1"},"consistency":"stale"}`)
	if code != 200 || !bytes.Contains(resp, []byte(`"state":{"value":5}`)) || !bytes.Contains(resp, []byte(`"found":true`)) {
		t.Fatalf("get: %d %s", code, resp)
	}
	h.be.entity = engine.Entity{Version: 1, State: []byte{0xff, 0x00}}
	if code, resp = httpCall(t, h, "POST", "/v1/get", tokAlice, `{"address":{"actor_type":"counter","entity_id":"c1"}}`); code != 200 || !bytes.Contains(resp, []byte(`"state_base64":"/wA="`)) {
		t.Fatalf("get of binary state: %d %s", code, resp)
	}

	h.be.history = func(engine.Position, int) ([]*pb.HistoryRecord, engine.Position, bool, error) {
		return []*pb.HistoryRecord{
			{Record: &pb.HistoryRecord_Event{Event: &pb.Event{Id: "e1", Type: "evt.counter.added", Payload: []byte(`{"amount":5}`)}}},
			{Record: &pb.HistoryRecord_Rejection{Rejection: &pb.Rejection{Type: engine.ViolationEventType, Reason: pb.Reason_REASON_VIOLATION}}},
		}, engine.Position{Index: 3}, true, nil
	}
	code, resp = httpCall(t, h, "POST", "/v1/history", tokAlice, `{"address":{"actor_type":"counter","entity_id":"c1"},"include_rejections":true}`)
	var hr JSONHistoryResponse
	if code != 200 || json.Unmarshal(resp, &hr) != nil || len(hr.Records) != 2 || string(hr.Records[0].Event.Payload) != `{"amount":5}` ||
		hr.Records[1].Rejection.Reason != "violation" || hr.NextPageToken == "" {
		t.Fatalf("history: %d %s", code, resp)
	}

	if code, resp = httpCall(t, h, "GET", "/v1/status", tokAlice, ""); code != 200 || !bytes.Contains(resp, []byte(`"node_id":"n1"`)) {
		t.Fatalf("status: %d %s", code, resp)
	}
	if code, resp = httpCall(t, h, "GET", "/v1/status", "", ""); code != 401 {
		t.Fatalf("status without token: %d %s", code, resp)
	}
	if code, _ = httpCall(t, h, "GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, resp = httpCall(t, h, "GET", "/readyz", "", ""); code != 200 {
		t.Fatalf("readyz %d %s", code, resp)
	}
	h.be.status = &pb.StatusResponse{Shards: []*pb.ShardStatus{{Shard: 7, Leader: "n1"}, {Shard: 8}}}
	if code, resp = httpCall(t, h, "GET", "/readyz", "", ""); code != 200 || !bytes.Contains(resp, []byte(`"state":"DEGRADED"`)) ||
		!bytes.Contains(resp, []byte("shard 8: no leader")) {
		t.Fatalf("readyz with a leaderless shard: %d %s", code, resp)
	}
	h.be.status = &pb.StatusResponse{Shards: []*pb.ShardStatus{{Shard: 7}}}
	if code, resp = httpCall(t, h, "GET", "/readyz", "", ""); code != 503 || !bytes.Contains(resp, []byte(`"state":"FAILED"`)) ||
		!bytes.Contains(resp, []byte("no shard has a leader")) {
		t.Fatalf("readyz without any shard leader: %d %s", code, resp)
	}
	h.be.statusErr = errors.New("boom")
	if code, _ = httpCall(t, h, "GET", "/readyz", "", ""); code != 503 {
		t.Fatalf("readyz with failing status: %d", code)
	}
}

func TestHTTPErrors(t *testing.T) {
	h := newHarness(t)
	const body = `{"address":{"actor_type":"counter","entity_id":"c1"},"type":"cmd.counter.add","payload":{"amount":5},"idempotency_key":"k1"}`

	h.be.submit = func(int, actor.Command) (actor.Result, error) { return actor.Result{}, outcome.ErrUnknownOutcome }
	code, hdr, resp := httpCallHeaders(t, h, "POST", "/v1/submit", tokAlice, body, nil)
	var e JSONError
	if code != 503 || json.Unmarshal(resp, &e) != nil || e.Code != "unavailable" || e.Outcome != "unknown" ||
		!strings.HasPrefix(e.Message, OutcomeUnknownPrefix) || hdr.Get(OutcomeTrailer) != OutcomeUnknown {
		t.Fatalf("unknown outcome: %d %v %s", code, hdr, resp)
	}
	h.be.submit = func(int, actor.Command) (actor.Result, error) { return actor.Result{}, outcome.ErrOverloaded }
	if code, resp = httpCall(t, h, "POST", "/v1/submit", tokAlice, body); code != 429 || !bytes.Contains(resp, []byte(`"outcome":"not_applied"`)) {
		t.Fatalf("overloaded: %d %s", code, resp)
	}
	h.be.submit = nil

	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
		msg                             string
	}{
		{"unknown field", "POST", "/v1/submit", tokAlice, `{"idempotencyKey":"k"}`, 400, "idempotencyKey"},
		{"empty body", "POST", "/v1/submit", tokAlice, ``, 400, "request body is empty"},
		{"trailing data", "POST", "/v1/submit", tokAlice, body + `{}`, 400, "data after the JSON object"},
		{"body too large", "POST", "/v1/submit", tokAlice, `{"payload":"` + strings.Repeat("x", MaxHTTPBodyBytes) + `"}`, 413, "request body is over"},
		{"wrong method", "GET", "/v1/submit", tokAlice, ``, 405, "takes POST"},
		{"no route", "GET", "/v2/nothing", tokAlice, ``, 404, "no route"},
		{"no route lists every route", "GET", "/v2/nothing", tokAlice, ``, 404, "POST /v1/result, POST /v1/list, GET /v1/status, GET /v1/cluster"},
		{"no route lists the console's", "GET", "/v2/nothing", tokAlice, ``, 404, "POST /v1/admin/dead_letters/redrive, GET /healthz, GET /readyz"},
		{"bad consistency", "POST", "/v1/get", tokAlice, `{"address":{"actor_type":"counter","entity_id":"c1"},"consistency":"eventual"}`, 400, "linearizable, stale"},
		{"no authorization header", "POST", "/v1/get", "", `{}`, 401, "missing bearer token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, resp := httpCall(t, h, tc.method, tc.path, tc.token, tc.body)
			if code != tc.code || !bytes.Contains(resp, []byte(tc.msg)) {
				t.Fatalf("%d %s, want %d containing %q", code, resp, tc.code, tc.msg)
			}
		})
	}

	// A Basic header is not silently treated as "no token".
	code, _, resp = httpCallHeaders(t, h, "POST", "/v1/get", "", `{}`, map[string]string{"Authorization": "Basic Zm9vOmJhcg=="})
	if code != 401 || !bytes.Contains(resp, []byte(`Bearer <token>`)) {
		t.Fatalf("basic auth: %d %s", code, resp)
	}
}

func TestHTTPStatusMapping(t *testing.T) {
	for c, want := range map[codes.Code]int{
		codes.InvalidArgument: 400, codes.Unauthenticated: 401, codes.PermissionDenied: 403, codes.NotFound: 404,
		codes.FailedPrecondition: 400, codes.ResourceExhausted: 429, codes.Unavailable: 503, codes.DeadlineExceeded: 504,
		codes.Internal: 500,
	} {
		if got := HTTPStatus(c); got != want {
			t.Errorf("%v -> %d, want %d", c, got, want)
		}
	}
}

func TestNewRequiresBackendAndAuth(t *testing.T) {
	if _, err := New(Config{Auth: testAuth(t)}); err == nil {
		t.Fatal("New without a backend succeeded")
	}
	if _, err := New(Config{Backend: newFakeBackend(t)}); err == nil || !strings.Contains(err.Error(), "Auth") {
		t.Fatalf("New without auth: %v", err)
	}
}

func TestReadBackendErrors(t *testing.T) {
	h := newHarness(t)
	ctx := withToken(context.Background(), tokAlice)
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{outcome.ErrNotLeader, codes.Unavailable},
		{outcome.ErrHalted, codes.Internal},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("disk on fire"), codes.Internal},
	} {
		h.be.getErr = tc.err
		_, err := h.gw.Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}})
		if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), "shard 2") {
			t.Errorf("%v -> %v %q, want %v naming the shard", tc.err, st.Code(), st.Message(), tc.code)
		}
	}
}

// POST /v1/submit_batch answers one outcome per command, in order: a result
// like /v1/submit's, or the error /v1/submit would have returned for that
// command alone; one bad command does not fail the others.
func TestHTTPSubmitBatch(t *testing.T) {
	h := newHarness(t)
	h.be.submit = func(_ int, cmd actor.Command) (actor.Result, error) {
		if cmd.IdempotencyKey == "k-unknown" {
			return actor.Result{}, outcome.ErrUnknownOutcome
		}
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}
	const body = `{"commands":[
		{"address":{"actor_type":"counter","entity_id":"c1"},"type":"cmd.counter.add","payload":{"amount":1},"idempotency_key":"k1"},
		{"address":{"actor_type":"counter","entity_id":"c2"},"type":"cmd.counter.add","payload":{"amount":2}},
		{"address":{"actor_type":"counter","entity_id":"c3"},"type":"cmd.counter.add","payload":{"amount":3},"idempotency_key":"k-unknown"},
		{"address":{"actor_type":"counter","entity_id":"c4"},"type":"cmd.counter.add","payload":{"amount":4},"idempotency_key":"k4"}]}`
	code, resp := httpCall(t, h, "POST", "/v1/submit_batch", tokAlice, body)
	if code != 200 {
		t.Fatalf("submit_batch: %d %s", code, resp)
	}
	var br JSONSubmitBatchResponse
	if err := json.Unmarshal(resp, &br); err != nil {
		t.Fatal(err)
	}
	if len(br.Outcomes) != 4 {
		t.Fatalf("%d outcomes, want 4: %s", len(br.Outcomes), resp)
	}
	for _, i := range []int{0, 3} {
		if o := br.Outcomes[i]; o.Error != nil || o.Result == nil || o.Result.Status != "accepted" || o.Shard == nil {
			t.Fatalf("outcome %d: %s", i, resp)
		}
	}
	if e := br.Outcomes[1].Error; e == nil || e.Code != "invalid_argument" || !strings.Contains(e.Message, "idempotency_key") ||
		br.Outcomes[1].Result != nil || br.Outcomes[1].Shard != nil {
		t.Fatalf("outcome 1 (no idempotency key): %s", resp)
	}
	if e := br.Outcomes[2].Error; e == nil || e.Code != "unavailable" || e.Outcome != "unknown" {
		t.Fatalf("outcome 2 (unknown outcome): %s", resp)
	}
	if n := len(h.be.commands()); n != 3 {
		t.Fatalf("%d commands reached the backend, want 3 (the invalid one must not)", n)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"commands":[]}`, "commands is empty"},
		{`{"commands":[{"address":{"actor_type":"counter","entity_id":"c1"},"type":"cmd.counter.add","idempotency_key":"k","oops":1}]}`, "unknown field"},
	} {
		if code, resp := httpCall(t, h, "POST", "/v1/submit_batch", tokAlice, tc.body); code != 400 || !strings.Contains(string(resp), tc.want) {
			t.Fatalf("submit_batch %s: %d %s, want 400 with %q", tc.body, code, resp, tc.want)
		}
	}
	if code, _ := httpCall(t, h, "POST", "/v1/submit_batch", "", body); code != 401 {
		t.Fatalf("submit_batch without token: %d", code)
	}
}
