package gateway

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// deployBackend is the fake backend that deploys (records the forwarded
// requests) and knows deployed owners.
type deployBackend struct {
	*fakeBackend
	got    []*pb.DeployActorRequest
	owners map[string]string
}

func (b *deployBackend) DeployActor(_ context.Context, req *pb.DeployActorRequest) (*pb.DeployActorResponse, error) {
	b.got = append(b.got, req)
	return &pb.DeployActorResponse{ActorType: req.GetActorType(), Revision: req.GetRevision(), Owner: req.GetOwner()}, nil
}

func (b *deployBackend) DeployedOwners() map[string]string { return b.owners }

// The gateway decides a deploy's owner from the token: a tenant token's own
// tenant (one of its scopes), the system (every tenant) for an admin token
// without --tenant. Another tenant's deployed type is hidden from a token
// and unknown to its commands.
func TestDeployActor_OwnerFromTokenAndTypesHiddenFromOtherTenants(t *testing.T) {
	be := &deployBackend{fakeBackend: newFakeBackend(t), owners: map[string]string{"wc": "beta", "shared": "*"}}
	srv, err := New(Config{Backend: be, Auth: testAuth(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	admin := adminServer{s: srv}
	mod := []byte("\x00asm")
	deploy := func(tok, tenant string) (*pb.DeployActorRequest, error) {
		n := len(be.got)
		_, err := admin.DeployActor(adminCtx(tok), &pb.DeployActorRequest{ActorType: "mine", Revision: "1", Module: mod, Tenant: tenant,
			Owner: "forged", System: true})
		if err != nil {
			return nil, err
		}
		if len(be.got) != n+1 {
			t.Fatalf("deploy with %s did not reach the backend", tok)
		}
		return be.got[n], nil
	}
	if r, err := deploy(tokAlice, ""); err != nil || r.GetOwner() != "acme" || r.GetSystem() || r.GetDeployedBy() != "alice" {
		t.Fatalf("tenant token: %v %v, want owner acme, not system", r, err)
	}
	if r, err := deploy(tokOps, "beta"); err != nil || r.GetOwner() != "beta" || r.GetSystem() {
		t.Fatalf("tenant token naming its second tenant: %v %v", r, err)
	}
	if _, err := deploy(tokAlice, "beta"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "outside this token's scopes") {
		t.Fatalf("tenant token naming another tenant: %v, want PermissionDenied", err)
	}
	if r, err := deploy(tokAdmin, ""); err != nil || r.GetOwner() != "" || !r.GetSystem() {
		t.Fatalf("admin token: %v %v, want the system", r, err)
	}
	big := make([]byte, MaxModuleBytes+1)
	if _, err := admin.DeployActor(adminCtx(tokAlice), &pb.DeployActorRequest{ActorType: "mine", Revision: "1", Module: big}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("oversized module: %v", err)
	}

	// acme's token sees neither beta's type nor may use it.
	if _, err := srv.lookup("wc", "acme"); status.Code(err) != codes.NotFound || strings.Contains(err.Error(), "wc,") {
		t.Fatalf("acme looking up beta's type: %v, want NotFound", err)
	}
	st := &pb.StatusResponse{ActorTypes: []string{"counter", "shared", "wc"}, DeployedOwners: map[string]string{"wc": "beta", "shared": "*"},
		Nodes: []*pb.NodeStatus{{NodeId: "n1", ActorRevisions: map[string]string{"counter": "", "shared": "1", "wc": "1"}}}}
	id, err := srv.auth.Authenticate(tokAlice)
	if err != nil {
		t.Fatal(err)
	}
	srv.hideOthersTypes(st, id)
	if slices.Contains(st.ActorTypes, "wc") || st.DeployedOwners["wc"] != "" || st.Nodes[0].ActorRevisions["wc"] != "" || st.DeployedOwners["shared"] != "*" {
		t.Fatalf("acme's view: %v", st)
	}
	// An owner activates its own type; another tenant may not.
	if _, err := admin.ActivateRevision(adminCtx(tokAlice), &pb.ActivateRevisionRequest{ActorType: "wc", Revision: "1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("acme activating beta's type: %v", err)
	}
	if srv.ownsType(id, "wc") || !srv.ownsType(mustVerify(t, srv, tokOps), "wc") {
		t.Fatal("ownsType: ops (scope beta) owns wc, alice does not")
	}
}

func mustVerify(t *testing.T, srv *Server, tok string) Identity {
	t.Helper()
	id, err := srv.auth.Authenticate(tok)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
