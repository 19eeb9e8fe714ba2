package cluster_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
)

// GetResult is scoped by the token as reads are: tenant a's token asking for
// a result of tenant b's entity is PermissionDenied (and audited); a's
// violation with a key of b's entity stores no result there, so b's
// GetResult of that key is NotFound and b's own later command with it is
// applied, not answered as a duplicate.
func TestPromise_Isolation_GetResultScopedByToken(t *testing.T) {
	tn := startNode(t, t.TempDir(), 4)
	a, b := tn.client(t, tokenA), tn.client(t, tokenB)
	own := &pb.Address{ActorType: "counter", EntityId: "secret"}
	target := &pb.Address{Tenant: "b", Workspace: "main", ActorType: "counter", EntityId: "secret"}
	if _, err := b.Submit(ctx(t), submit("counter", "secret", "add", "kb", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetResult(ctx(t), &pb.GetResultRequest{Address: own, IdempotencyKey: "kb"})
	if err != nil || got.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED || got.GetResult().GetVersion() != 1 {
		t.Fatalf("b's own result: %v %v", got, err)
	}
	_, err = a.GetResult(ctx(t), &pb.GetResultRequest{Address: target, IdempotencyKey: "kb"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), `tenant "a"`) {
		t.Fatalf("a reading b's result: %v, want PermissionDenied", err)
	}
	// The refused read is in alice's audit stream.
	auditor := tn.client(t, tokenAudit)
	found := false
	for s := range uint32(4) {
		h, err := auditor.History(ctx(t), &pb.HistoryRequest{Address: pb.FromAddress(engine.AuditAddress("alice", s, 4)), IncludeRejections: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range h.Records {
			if r.GetRejection().GetType() == engine.ViolationEventType && r.GetRejection().GetAddress().GetEntityId() == "secret" {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("a's refused GetResult is not in its audit stream")
	}

	req := submit("counter", "secret", "add", "ka", `{"amount":1000}`)
	req.Address = target
	if _, err := a.Submit(ctx(t), req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a's submit into b: %v", err)
	}
	if _, err := b.GetResult(ctx(t), &pb.GetResultRequest{Address: own, IdempotencyKey: "ka"}); status.Code(err) != codes.NotFound ||
		!strings.Contains(status.Convert(err).Message(), `"ka"`) {
		t.Fatalf("b's result of the key a used: %v, want NotFound naming the key", err)
	}
	resp, err := b.Submit(ctx(t), submit("counter", "secret", "add", "ka", `{"amount":1}`))
	if err != nil || resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED || resp.GetResult().GetDuplicate() || resp.GetResult().GetVersion() != 2 {
		t.Fatalf("b's command with the key a used: %v %v", resp, err)
	}
	if _, err := b.GetResult(ctx(t), &pb.GetResultRequest{Address: own}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetResult without a key: %v, want InvalidArgument", err)
	}
}
