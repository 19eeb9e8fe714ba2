package gateway

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// replayingBackend is the fake backend with the Replay capability; it
// records the requests that reached it.
type replayingBackend struct {
	*fakeBackend
	rmu sync.Mutex
	got []*pb.ReplayRequest
}

func (b *replayingBackend) Replay(_ context.Context, req *pb.ReplayRequest) (*pb.ReplayReport, error) {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	b.got = append(b.got, req)
	return &pb.ReplayReport{Shard: req.GetShard(), Identical: true, RecordedHash: "ab", ReplayedHash: "ab"}, nil
}

func (b *replayingBackend) requests() []*pb.ReplayRequest {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	return append([]*pb.ReplayRequest(nil), b.got...)
}

func replayEntity(tenant, workspace, id string) *pb.ReplayRequest {
	return &pb.ReplayRequest{Scope: &pb.ReplayRequest_Address{Address: &pb.Address{
		Tenant: tenant, Workspace: workspace, ActorType: "counter", EntityId: id}}}
}

// An entity's replay is a read: a token that may read the entity may replay
// it (tenant and workspace default to the token's), another tenant's entity
// is PermissionDenied and recorded as a read violation, and neither reaches
// the backend. A whole shard needs role admin.
func TestReplay_ScopeAndRoles(t *testing.T) {
	be := &replayingBackend{fakeBackend: newFakeBackend(t)}
	srv, err := New(Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}

	// Alice's own entity, the scope filled from her token.
	rep, err := srv.Replay(adminCtx(tokAlice), replayEntity("", "", "c1"))
	if err != nil || !rep.GetIdentical() {
		t.Fatalf("alice replays her own entity: %v %v", rep, err)
	}
	got := be.requests()
	if len(got) != 1 {
		t.Fatalf("backend got %d requests, want 1", len(got))
	}
	if a := got[0].GetAddress(); a.GetTenant() != "acme" || a.GetWorkspace() == "" || a.GetEntityId() != "c1" {
		t.Fatalf("the backend got address %v, want acme's c1 with the token's workspace", a)
	}

	// Another tenant's entity: denied, audited as a read, never replayed.
	be.reset()
	_, err = srv.Replay(adminCtx(tokAlice), replayEntity("beta", "ops", "c1"))
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "recorded") {
		t.Fatalf("alice replays beta's entity: %v, want PermissionDenied saying it was recorded", err)
	}
	cmds := be.commands()
	if len(cmds) != 1 || cmds[0].Type != actor.CommandType("counter", actor.ReadVerb) ||
		cmds[0].Address.Tenant != "beta" || cmds[0].Security.Principal.ID != "alice" {
		t.Fatalf("violation record: %+v, want one read violation on beta's entity by alice", cmds)
	}
	if n := len(be.requests()); n != 1 {
		t.Fatalf("a denied replay reached the backend (%d requests)", n)
	}

	// A whole shard: role admin only, whatever the token's scopes.
	shard1 := &pb.ReplayRequest{Scope: &pb.ReplayRequest_Shard{Shard: 1}, Tenant: "acme"}
	for _, tc := range []struct{ tok, role string }{{tokAlice, "tenant"}, {tokSystem, "system"}, {tokOps, "tenant"}} {
		_, err := srv.Replay(adminCtx(tc.tok), shard1)
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "role admin") ||
			!strings.Contains(st.Message(), "role "+tc.role) {
			t.Fatalf("shard replay with a %s token: %v, want PermissionDenied naming role admin", tc.role, err)
		}
	}
	if n := len(be.requests()); n != 1 {
		t.Fatalf("denied shard replays reached the backend (%d requests)", n)
	}
	rep, err = srv.Replay(adminCtx(tokAdmin), shard1)
	if err != nil || rep.GetShard() != 1 {
		t.Fatalf("admin replays shard 1: %v %v", rep, err)
	}
	if got := be.requests(); len(got) != 2 || got[1].GetShard() != 1 || got[1].GetTenant() != "acme" {
		t.Fatalf("the backend got %v, want shard 1 narrowed to acme", got)
	}

	// Bad input: no scope; a filter beside an address; no token.
	for _, req := range []*pb.ReplayRequest{{}, {Scope: replayEntity("", "", "c1").Scope, Tenant: "acme"}} {
		if _, err := srv.Replay(adminCtx(tokAlice), req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("replay %v: %v, want InvalidArgument", req, err)
		}
	}
	if _, err := srv.Replay(adminCtx(""), shard1); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("replay without a token: %v, want Unauthenticated", err)
	}

	// A backend without the capability: Unimplemented, over the wire too.
	h := newHarness(t)
	_, err = pb.NewGatewayClient(h.conn).Replay(withToken(context.Background(), tokAlice), replayEntity("", "", "c1"))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("replay on a backend that cannot: %v, want Unimplemented", err)
	}
}
