package gateway

import (
	"context"
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// The routes the web console (package console) needs beyond the API's own,
// each behind the same bearer token and scoping as its gRPC twin:
//
//	GET /v1/cluster -> the full Gateway.Status as protojson (proto field
//	                   names, zero values included): nodes, every replica,
//	                   placement, health. A non-admin token gets the same
//	                   tenant view Status gives it.
//	GET /v1/whoami  -> JSONWhoAmI: whom the token names, its role and scopes,
//	                   so the console can say who is logged in and hide what
//	                   the role may not do.
//	GET  /v1/admin/dead_letters?after=&limit=  -> JSONDeadLettersResponse
//	POST /v1/admin/dead_letters/redrive  JSONRedriveRequest -> JSONRedriveResponse
//	                   Admin.ListDeadLetters and Admin.RedriveDeadLetter
//	                   (deadletters.go), role admin only.
func (s *Server) consoleRoutes(rt *routes) {
	rt.api(s, http.MethodGet, "/v1/cluster", s.httpCluster)
	rt.api(s, http.MethodGet, "/v1/whoami", s.httpWhoAmI)
	rt.api(s, http.MethodGet, "/v1/admin/dead_letters", s.httpDeadLetters)
	rt.api(s, http.MethodPost, "/v1/admin/dead_letters/redrive", s.httpRedrive)
}

// clusterJSON keeps zero values (a term of 0, an empty leader): the console
// shows them rather than guessing at missing fields.
var clusterJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// rawJSON is already-encoded JSON that writeJSON passes through.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

func (s *Server) httpCluster(ctx context.Context, _ http.ResponseWriter, _ *http.Request) (any, error) {
	resp, err := s.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return nil, err
	}
	b, err := clusterJSON.Marshal(resp)
	if err != nil {
		return nil, err
	}
	return rawJSON(b), nil
}

// JSONWhoAmI is what /v1/whoami answers.
type JSONWhoAmI struct {
	Principal        JSONPrincipal `json:"principal"`
	Role             string        `json:"role"`
	Scopes           []JSONScope   `json:"scopes"`
	DefaultTenant    string        `json:"default_tenant"`
	DefaultWorkspace string        `json:"default_workspace"`
}

// JSONScope is one tenant/workspace a token may act in ("*": every
// workspace of the tenant).
type JSONScope struct {
	Tenant    string `json:"tenant"`
	Workspace string `json:"workspace"`
}

func (s *Server) httpWhoAmI(ctx context.Context, _ http.ResponseWriter, _ *http.Request) (any, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	out := &JSONWhoAmI{
		Principal: JSONPrincipal{ID: id.Principal.ID, Type: string(id.Principal.Type)},
		Role:      string(id.Role), Scopes: make([]JSONScope, 0, len(id.Scopes)),
		DefaultTenant: id.DefaultScope.Tenant, DefaultWorkspace: id.DefaultScope.Workspace,
	}
	for _, sc := range id.Scopes {
		out.Scopes = append(out.Scopes, JSONScope{Tenant: sc.Tenant, Workspace: sc.Workspace})
	}
	return out, nil
}
