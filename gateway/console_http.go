package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
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
//	                   the dead-letter stream, role admin only: it holds
//	                   every tenant's failed commands.
func (s *Server) consoleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/v1/cluster", s.httpRoute(http.MethodGet, s.httpCluster))
	mux.HandleFunc("/v1/whoami", s.httpRoute(http.MethodGet, s.httpWhoAmI))
	mux.HandleFunc("/v1/admin/dead_letters", s.httpRoute(http.MethodGet, s.httpDeadLetters))
	mux.HandleFunc("/v1/admin/dead_letters/redrive", s.httpRoute(http.MethodPost, s.httpRedrive))
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

// DeadLetterAdmin is the optional capability of an AsyncBackend that lists
// and redrives the dead-letter stream (ingress.Manager). Without it the
// dead-letter routes answer Unimplemented.
type DeadLetterAdmin interface {
	DeadLetters(ctx context.Context, after uint64, limit int) ([]stream.DeadLetter, uint64, error)
	Redrive(ctx context.Context, seq uint64) (stream.Enqueued, error)
}

// Dead-letter pages: DefaultDeadLetterPage unless limit says otherwise, at
// most MaxDeadLetterPage (each keeps up to 64 KiB of body).
const (
	DefaultDeadLetterPage = 50
	MaxDeadLetterPage     = 500
)

// JSONDeadLetter is one dead letter. Body is the kept prefix of the
// original body when it is UTF-8, else BodyBase64; Command is the body
// decoded as a command, when it is one.
type JSONDeadLetter struct {
	Sequence      uint64            `json:"sequence"`
	Subject       string            `json:"subject"`
	Shard         uint32            `json:"shard"`
	At            int64             `json:"at"`
	Kind          string            `json:"kind"`
	Reason        string            `json:"reason"`
	Source        string            `json:"source"`
	Size          int               `json:"size"`
	Digest        string            `json:"digest"`
	Body          string            `json:"body,omitempty"`
	BodyBase64    string            `json:"body_base64,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Command       json.RawMessage   `json:"command,omitempty"`
	Redrivable    bool              `json:"redrivable"`
	NotRedrivable string            `json:"not_redrivable,omitempty"`
}

// JSONDeadLettersResponse is a page; Next (when set) is the after of the
// next page.
type JSONDeadLettersResponse struct {
	DeadLetters []JSONDeadLetter `json:"dead_letters"`
	Next        uint64           `json:"next,omitempty"`
}

// JSONRedriveRequest names the dead letter to publish again.
type JSONRedriveRequest struct {
	Sequence uint64 `json:"sequence"`
}

// JSONRedriveResponse is where the redriven command was stored; Duplicate
// when the same dead letter was redriven moments ago.
type JSONRedriveResponse struct {
	Stream    string `json:"stream"`
	Sequence  uint64 `json:"sequence"`
	Shard     uint32 `json:"shard"`
	Duplicate bool   `json:"duplicate"`
}

// deadLetterAdmin authorizes an admin and returns the capability.
func (s *Server) deadLetterAdmin(ctx context.Context, what string) (DeadLetterAdmin, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if id.Role != RoleAdmin {
		return nil, roleDenied(id, what)
	}
	dl, ok := s.async.(DeadLetterAdmin)
	if !ok {
		return nil, status.Error(codes.Unimplemented, what+": this node has no JetStream (--nats-addr off), so no dead letters")
	}
	return dl, nil
}

func deadLetterError(err error, what string) error {
	switch {
	case errors.Is(err, stream.ErrDeadLetterNotFound):
		return status.Errorf(codes.NotFound, "%v: list them with GET /v1/admin/dead_letters", err)
	case errors.Is(err, stream.ErrNotRedrivable):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return readError(err, "the dead-letter stream", what)
}

func (s *Server) httpDeadLetters(ctx context.Context, _ http.ResponseWriter, r *http.Request) (any, error) {
	dl, err := s.deadLetterAdmin(ctx, "listing dead letters")
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var after uint64
	limit := DefaultDeadLetterPage
	for k, v := range q {
		switch {
		case len(v) != 1:
			return nil, status.Errorf(codes.InvalidArgument, "query parameter %q is given %d times; give it once", k, len(v))
		case k == "after":
			if after, err = strconv.ParseUint(v[0], 10, 64); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "after %q is not a sequence number (a non-negative integer)", v[0])
			}
		case k == "limit":
			n, err := strconv.Atoi(v[0])
			if err != nil || n < 1 || n > MaxDeadLetterPage {
				return nil, status.Errorf(codes.InvalidArgument, "limit %q is not a whole number from 1 to %d", v[0], MaxDeadLetterPage)
			}
			limit = n
		default:
			return nil, status.Errorf(codes.InvalidArgument, "unknown query parameter %q; parameters: after, limit", k)
		}
	}
	list, next, err := dl.DeadLetters(ctx, after, limit)
	if err != nil {
		return nil, deadLetterError(err, "the listing")
	}
	out := &JSONDeadLettersResponse{DeadLetters: make([]JSONDeadLetter, 0, len(list)), Next: next}
	for _, d := range list {
		j := JSONDeadLetter{
			Sequence: d.Sequence, Subject: d.Subject, Shard: d.Shard, At: d.Time.UnixMilli(), Kind: d.Kind,
			Reason: d.Reason, Source: d.Source, Size: d.Size, Digest: d.Digest, Headers: d.Headers,
			Command: d.Command, Redrivable: d.Redrivable, NotRedrivable: d.NotRedrivable,
		}
		if utf8.Valid(d.Body) {
			j.Body = string(d.Body)
		} else {
			j.BodyBase64 = base64.StdEncoding.EncodeToString(d.Body)
		}
		out.DeadLetters = append(out.DeadLetters, j)
	}
	return out, nil
}

func (s *Server) httpRedrive(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	dl, err := s.deadLetterAdmin(ctx, "redriving dead letters")
	if err != nil {
		return nil, err
	}
	var in JSONRedriveRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	if in.Sequence == 0 {
		return nil, status.Error(codes.InvalidArgument, `sequence is required: the dead letter's sequence, e.g. {"sequence": 3}`)
	}
	enq, err := dl.Redrive(ctx, in.Sequence)
	if err != nil {
		return nil, deadLetterError(err, "the redrive")
	}
	s.log.Info("dead letter redriven", "sequence", in.Sequence, "stream", enq.Stream, "to", enq.Sequence, "duplicate", enq.Duplicate)
	return &JSONRedriveResponse{Stream: enq.Stream, Sequence: enq.Sequence, Shard: enq.Shard, Duplicate: enq.Duplicate}, nil
}
