package gateway

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// republishingBackend is the fake backend with the RepublishEvents
// capability; it records the requests it got.
type republishingBackend struct {
	*fakeBackend
	got []*pb.RepublishEventsRequest
}

func (b *republishingBackend) RepublishEvents(_ context.Context, req *pb.RepublishEventsRequest) (*pb.RepublishEventsResponse, error) {
	if req.GetShard() >= 4 {
		return nil, status.Errorf(codes.InvalidArgument, "shard %d does not exist", req.GetShard())
	}
	b.got = append(b.got, req)
	return &pb.RepublishEventsResponse{Shard: req.GetShard(), Republished: 3, Done: true}, nil
}

// Republishing reads every tenant's events of a shard and floods the events
// stream: only a token with role admin may, the others get PermissionDenied
// naming the role they lack and the one they have, and reach no backend.
func TestRoles_RepublishNeedsAdmin(t *testing.T) {
	be := &republishingBackend{fakeBackend: newFakeBackend(t)}
	srv, err := New(Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	admin := adminServer{s: srv}
	req := &pb.RepublishEventsRequest{Shard: 1, From: &pb.Position{Index: 5}}
	for _, tc := range []struct{ tok, role string }{{tokSystem, "system"}, {tokAlice, "tenant"}, {tokOps, "tenant"}} {
		_, err := admin.RepublishEvents(adminCtx(tc.tok), req)
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "role admin") || !strings.Contains(st.Message(), "role "+tc.role) {
			t.Fatalf("republish with a %s token: %v %q, want PermissionDenied naming role admin and role %s", tc.role, st.Code(), st.Message(), tc.role)
		}
	}
	if _, err := admin.RepublishEvents(adminCtx(""), req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("republish without a token: %v, want Unauthenticated", err)
	}
	if len(be.got) != 0 {
		t.Fatalf("denied calls reached the backend: %v", be.got)
	}
	resp, err := admin.RepublishEvents(adminCtx(tokAdmin), req)
	if err != nil || resp.GetRepublished() != 3 || len(be.got) != 1 || be.got[0].GetFrom().GetIndex() != 5 {
		t.Fatalf("republish with an admin token: %v %v, backend got %v", resp, err, be.got)
	}
	// The backend's bad-input status goes to the caller as it is.
	if _, err := admin.RepublishEvents(adminCtx(tokAdmin), &pb.RepublishEventsRequest{Shard: 9}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("republish of shard 9: %v, want InvalidArgument", err)
	}
	// A backend without the capability: Unimplemented, over the wire too.
	h := newHarness(t)
	_, err = pb.NewAdminClient(h.conn).RepublishEvents(withToken(context.Background(), tokAdmin), req)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("republish on a backend that cannot: %v, want Unimplemented", err)
	}
	_, err = pb.NewAdminClient(h.conn).RepublishEvents(withToken(context.Background(), tokAlice), req)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("republish over gRPC with a tenant token: %v, want PermissionDenied", err)
	}
}

// adminCtx is an incoming call's context carrying token ("" sends none).
func adminCtx(token string) context.Context {
	if token == "" {
		return context.Background()
	}
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

type activatingBackend struct {
	*fakeBackend
	got []*pb.ActivateRevisionRequest
}

func (b *activatingBackend) ActivateRevision(_ context.Context, req *pb.ActivateRevisionRequest) (*pb.ActivateRevisionResponse, error) {
	b.got = append(b.got, req)
	return &pb.ActivateRevisionResponse{ActorType: req.GetActorType(), Revision: req.GetRevision()}, nil
}

// Switching an actor revision changes how every tenant's commands are
// decided: admin only; other roles never reach the backend.
func TestRoles_ActivateRevisionNeedsAdmin(t *testing.T) {
	be := &activatingBackend{fakeBackend: newFakeBackend(t)}
	srv, err := New(Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	admin := adminServer{s: srv}
	req := &pb.ActivateRevisionRequest{ActorType: "counter", Revision: "3"}
	for _, tok := range []string{tokSystem, tokAlice, tokOps} {
		if _, err := admin.ActivateRevision(adminCtx(tok), req); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("activate with token %s: %v, want PermissionDenied", tok, err)
		}
	}
	if len(be.got) != 0 {
		t.Fatalf("denied calls reached the backend: %v", be.got)
	}
	if resp, err := admin.ActivateRevision(adminCtx(tokAdmin), req); err != nil || resp.GetRevision() != "3" || len(be.got) != 1 {
		t.Fatalf("activate as admin: %v %v", resp, err)
	}
	h := newHarness(t)
	if _, err := pb.NewAdminClient(h.conn).ActivateRevision(withToken(context.Background(), tokAdmin), req); status.Code(err) != codes.Unimplemented {
		t.Fatalf("activate on a backend that cannot: %v, want Unimplemented", err)
	}
}

// revisionBackend is the fake backend with the cluster's active revisions.
type revisionBackend struct {
	*fakeBackend
	active map[string]string
}

func (b *revisionBackend) ActiveRevisions() map[string]string { return b.active }

// The gateway checks verbs and payloads against the revision the cluster
// runs a type at: a verb only revision 2 has is refused before the
// switch-over and reaches the log after it.
func TestLookup_UsesTheActiveRevision(t *testing.T) {
	def := func(rev string, verbs ...string) actor.Behavior {
		cmds := map[string]actor.Handler[struct{}]{}
		for _, v := range verbs {
			cmds[v] = func(*actor.Context, *struct{}, *actor.Command) ([]actor.NewEvent, error) { return nil, nil }
		}
		return actor.Define(actor.Definition[struct{}]{Name: "ticket", Revision: rev, Commands: cmds,
			Apply: func(*struct{}, *actor.Event) error { return nil }})
	}
	reg, err := actor.NewRegistry(def("1", "open"))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.AddRevision(def("2", "close", "open")); err != nil {
		t.Fatal(err)
	}
	be := &revisionBackend{fakeBackend: &fakeBackend{reg: reg}}
	srv, err := New(Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	b, err := srv.lookup("ticket", "acme")
	if err != nil || actor.Revision(b) != "1" {
		t.Fatalf("before the switch-over: %v %v, want revision 1", b, err)
	}
	be.active = map[string]string{"ticket": "2"}
	b, err = srv.lookup("ticket", "acme")
	if err != nil || actor.Revision(b) != "2" || !slices.Contains(b.Verbs(), "close") {
		t.Fatalf("after the switch-over: %v %v, want revision 2 with verb close", b, err)
	}
}
