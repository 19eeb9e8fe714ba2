package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Every command of a batch gets exactly the answer Submit gives it alone:
// each bad input of the Submit table, between two good commands, in one
// batch.
func TestSubmitBatchAnswersEachCommandAsSubmit(t *testing.T) {
	h := newHarness(t)
	ctx := withToken(context.Background(), tokAlice)
	var cases []submitCase
	for _, tc := range badSubmits() {
		if tc.token == tokAlice { // one batch, one token
			cases = append(cases, tc)
		}
	}
	if len(cases) < 10 {
		t.Fatalf("only %d cases with alice's token", len(cases))
	}
	good := func(k string) *pb.SubmitRequest { return counterReq("c1", k, `{"amount":1}`) }
	req := &pb.SubmitBatchRequest{Commands: []*pb.SubmitRequest{good("first")}}
	for _, tc := range cases {
		req.Commands = append(req.Commands, tc.req)
	}
	req.Commands = append(req.Commands, good("last"))
	h.be.reset()
	resp, err := h.gw.SubmitBatch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	outs := resp.GetOutcomes()
	if len(outs) != len(req.Commands) {
		t.Fatalf("%d outcomes for %d commands", len(outs), len(req.Commands))
	}
	for _, i := range []int{0, len(outs) - 1} {
		if outs[i].GetError() != nil || outs[i].GetResponse().GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("good command %d: %v", i, outs[i])
		}
	}
	for i, tc := range cases {
		got := status.FromProto(outs[i+1].GetError())
		if got.Code() != tc.code {
			t.Errorf("%s: code %v (%q), want %v", tc.name, got.Code(), got.Message(), tc.code)
		}
		for _, m := range tc.msg {
			if !strings.Contains(got.Message(), m) {
				t.Errorf("%s: message %q does not contain %q", tc.name, got.Message(), m)
			}
		}
		if outs[i+1].GetResponse() != nil {
			t.Errorf("%s: a refused command has a response", tc.name)
		}
	}
	// The two good commands reached the backend, and of the bad ones only
	// the scope violations, to be recorded.
	want := map[string]int{"first": 1, "last": 1}
	for _, tc := range cases {
		if tc.recorded > 0 {
			want[tc.req.GetIdempotencyKey()] += tc.recorded
		}
	}
	got := map[string]int{}
	for _, c := range h.be.commands() {
		got[c.IdempotencyKey]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("commands that reached the backend, by key: %v, want %v", got, want)
	}
}

// A scope violation inside a batch is recorded like one sent alone, and the
// batch's other commands still run.
func TestSubmitBatchRecordsAViolation(t *testing.T) {
	h := newHarness(t)
	ctx := withToken(context.Background(), tokOps)
	bad := counterReq("c1", "bad", `{"amount":1}`)
	bad.Address.Tenant, bad.Address.Workspace = "beta", "dev"
	resp, err := h.gw.SubmitBatch(ctx, &pb.SubmitBatchRequest{Commands: []*pb.SubmitRequest{bad, counterReq("c2", "ok", `{"amount":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if st := status.FromProto(resp.GetOutcomes()[0].GetError()); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "the attempt was recorded") {
		t.Fatalf("violation: %v %q", st.Code(), st.Message())
	}
	if resp.GetOutcomes()[1].GetResponse() == nil {
		t.Fatalf("the in-scope command: %v", resp.GetOutcomes()[1])
	}
	recorded := 0
	for _, c := range h.be.commands() {
		if c.IdempotencyKey == "bad" {
			recorded++
			if c.Security.Allows(c.Address.Tenant, c.Address.Workspace) {
				t.Fatalf("recorded command's security %+v allows its address", c.Security)
			}
		}
	}
	if recorded != 1 {
		t.Fatalf("violation recorded %d times, want once", recorded)
	}
}

// Backend failures become per-command errors with the details Submit gives
// (the client's retry decisions read them), and an unknown outcome marks the
// whole call with the outcome trailer.
func TestSubmitBatchCarriesBackendErrors(t *testing.T) {
	h := newHarness(t)
	ctx := withToken(context.Background(), tokAlice)
	errs := map[string]error{"over": outcome.ErrOverloaded, "lost": outcome.ErrUnknownOutcome, "moved": fmt.Errorf("forward: %w", outcome.ErrNotLeader)}
	h.be.submit = func(n int, cmd actor.Command) (actor.Result, error) {
		if err := errs[cmd.IdempotencyKey]; err != nil {
			return actor.Result{}, err
		}
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}
	defer func() { h.be.submit = nil }()
	keys := []string{"over", "fine", "lost", "moved"}
	req := &pb.SubmitBatchRequest{}
	for _, k := range keys {
		c := counterReq("c-"+k, k, `{"amount":1}`)
		c.CommandId = "id-" + k // else the gateway draws one, and the errors name it
		req.Commands = append(req.Commands, c)
	}
	var trailer metadata.MD
	resp, err := h.gw.SubmitBatch(ctx, req, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		out := resp.GetOutcomes()[i]
		if k == "fine" {
			if out.GetResponse().GetResult().GetVersion() != 1 {
				t.Fatalf("fine: %v", out)
			}
			continue
		}
		_, alone := h.gw.Submit(ctx, req.Commands[i])
		if got, want := status.FromProto(out.GetError()), status.Convert(alone); !sameStatus(got, want) {
			t.Errorf("%s: batch outcome %v, alone %v", k, got.Proto(), want.Proto())
		}
	}
	if got := trailer.Get(OutcomeTrailer); len(got) != 1 || got[0] != OutcomeUnknown {
		t.Errorf("trailer %s=%v, want %q", OutcomeTrailer, got, OutcomeUnknown)
	}
}

// The call itself fails for what no command can fix: no token, no command,
// too many commands; and then nothing reaches the backend.
func TestSubmitBatchRefusesTheCall(t *testing.T) {
	h := newHarness(t)
	one := []*pb.SubmitRequest{counterReq("c1", "k", `{"amount":1}`)}
	many := make([]*pb.SubmitRequest, MaxSubmitBatch+1)
	for i := range many {
		many[i] = counterReq("c1", fmt.Sprint("k", i), `{"amount":1}`)
	}
	cases := []struct {
		name  string
		token string
		cmds  []*pb.SubmitRequest
		code  codes.Code
		msg   string
	}{
		{"no token", "", one, codes.Unauthenticated, "missing bearer token"},
		{"unknown token", "not-a-real-token-at-all", one, codes.Unauthenticated, "unknown token"},
		{"empty", tokAlice, nil, codes.InvalidArgument, "a batch needs at least one command"},
		{"too many", tokAlice, many, codes.InvalidArgument, fmt.Sprintf("%d commands in one batch; the limit is %d", MaxSubmitBatch+1, MaxSubmitBatch)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.be.reset()
			_, err := h.gw.SubmitBatch(withToken(context.Background(), tc.token), &pb.SubmitBatchRequest{Commands: tc.cmds})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("%v %q, want %v with %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if n := len(h.be.commands()); n != 0 {
				t.Fatalf("%d commands reached the backend", n)
			}
		})
	}
}

// sameStatus compares code, message and details. Details are compared
// unpacked: an Any's bytes hold maps, whose order is not deterministic.
func sameStatus(a, b *status.Status) bool {
	if a.Code() != b.Code() || a.Message() != b.Message() || len(a.Details()) != len(b.Details()) {
		return false
	}
	for i, d := range a.Details() {
		da, ok1 := d.(proto.Message)
		db, ok2 := b.Details()[i].(proto.Message)
		if !ok1 || !ok2 || !proto.Equal(da, db) {
			return false
		}
	}
	return true
}
