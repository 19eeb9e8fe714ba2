package gateway

import (
	"testing"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/ingress"
)

// A producer's command over NATS gets the tenant and workspace the gateway
// would give it: ingress.FillScope and the gateway's rule agree.
func TestFillScope_IngressAgreesWithTheGateway(t *testing.T) {
	if ingress.DefaultWorkspace != DefaultWorkspace {
		t.Fatalf("ingress.DefaultWorkspace %q, gateway's %q", ingress.DefaultWorkspace, DefaultWorkspace)
	}
	for _, scopes := range [][]TokenScope{
		{{Tenant: "a", Workspace: "*"}, {Tenant: "b", Workspace: "ops"}},
		{{Tenant: "a", Workspace: "w1"}, {Tenant: "b", Workspace: "*"}, {Tenant: "a", Workspace: "w2"}},
	} {
		id, err := TokenEntry{Token: "0123456789abcdef0123", Principal: TokenPrincipal{ID: "p", Type: "service"}, Scopes: scopes}.identity()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []*pb.Address{{}, {Tenant: "a"}, {Tenant: "b"}, {Tenant: "c"}, {Workspace: "x"}, {Tenant: "b", Workspace: "y"}} {
			want := fillScope(a, id)
			if got := ingress.FillScope(a.ToActor(), id.Security()); got != want {
				t.Errorf("scopes %v, address %+v: ingress fills %+v, the gateway %+v", scopes, a.ToActor(), got, want)
			}
		}
	}
}
