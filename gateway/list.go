package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// Lister is an optional Backend capability: List over every shard of a
// scope (see pb.ListRequest for the read level). more reports whether
// documents follow the page.
type Lister interface {
	List(ctx context.Context, scope actor.Address, sc *pb.ListScan) (resp *pb.ListResponse, more bool, err error)
}

// listEntity is the entity id of the address a List is authorized and, when
// out of scope, audited under: a List names no entity.
const listEntity = "_list"

// listTokenVersion starts every List page token, so a later format can be
// told apart.
const listTokenVersion = 1

// List returns one page of a document type's documents; see the proto.
func (s *Server) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	lister, ok := s.backend.(Lister)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this node cannot list")
	}
	a, _, err := s.readTarget(ctx, &pb.Address{
		Tenant: req.GetTenant(), Workspace: req.GetWorkspace(), ActorType: req.GetActorType(), EntityId: listEntity,
	})
	if err != nil {
		return nil, err
	}
	beh, err := s.lookup(a.ActorType, a.Tenant)
	if err != nil {
		return nil, err
	}
	if _, ok := beh.(actor.Indexer); !ok {
		return nil, status.Errorf(codes.InvalidArgument, "actor type %q is not a document type; list works on kv and the types declared with --document-types", a.ActorType)
	}
	limit := req.GetLimit()
	switch {
	case limit == 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		return nil, status.Errorf(codes.InvalidArgument, "limit is %d; the limit is %d (0 means %d)", limit, MaxPageSize, DefaultPageSize)
	}
	sc, err := listScan(beh, req.GetWhere())
	if err != nil {
		return nil, err
	}
	sc.Prefix, sc.Limit = req.GetPrefix(), limit
	if t := req.GetPageToken(); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || len(b) < 2 || b[0] != listTokenVersion {
			return nil, status.Error(codes.InvalidArgument, "page_token is not one this server issued; pass next_page_token from the previous page unchanged")
		}
		sc.After, sc.HasAfter = b[1:], true
	}
	scope := a
	scope.EntityID = ""
	resp, more, err := lister.List(ctx, scope, sc)
	if err != nil {
		return nil, readError(err, "a shard", "list")
	}
	if more && len(resp.Items) > 0 {
		last := resp.Items[len(resp.Items)-1]
		tok := append([]byte{listTokenVersion}, last.IndexValue...)
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString(append(tok, last.Id...))
	}
	return resp, nil
}

// listScan turns where conditions into index bounds: all on one indexed
// field, at most one lower and one upper bound.
func listScan(beh actor.Behavior, where []*pb.ListWhere) (*pb.ListScan, error) {
	sc := &pb.ListScan{Field: actor.ListField}
	if len(where) == 0 {
		return sc, nil
	}
	var fields []string
	if ix, ok := beh.(interface{ IndexedFields() []string }); ok {
		fields = ix.IndexedFields()
	}
	for _, w := range where {
		f := w.GetField()
		if sc.Field != actor.ListField && f != sc.Field {
			return nil, status.Errorf(codes.InvalidArgument, "where names fields %q and %q; a list uses one index: put the conditions on one field", sc.Field, f)
		}
		if !slices.Contains(fields, f) {
			return nil, status.Errorf(codes.InvalidArgument, "field %q of %q has no index; indexed fields: [%s] (declare one with --document-types %s:%s)",
				f, beh.Type(), strings.Join(fields, ", "), beh.Type(), f)
		}
		sc.Field = f
		v, ok := actor.EncodeIndexValue(json.RawMessage(w.GetValue()))
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "where %s: value %q must be a JSON scalar: a \"quoted string\", a number, true, false or null", f, w.GetValue())
		}
		lo, hi := func() error {
			if sc.Lo != nil {
				return status.Errorf(codes.InvalidArgument, "where %s has two lower bounds; give one", f)
			}
			return nil
		}, func() error {
			if sc.Hi != nil {
				return status.Errorf(codes.InvalidArgument, "where %s has two upper bounds; give one", f)
			}
			return nil
		}
		var err error
		switch w.GetOp() {
		case "=", "==":
			if err = lo(); err == nil {
				if err = hi(); err == nil {
					sc.Lo, sc.Hi = v, v
				}
			}
		case ">", ">=":
			if err = lo(); err == nil {
				sc.Lo, sc.LoExcl = v, w.GetOp() == ">"
			}
		case "<", "<=":
			if err = hi(); err == nil {
				sc.Hi, sc.HiExcl = v, w.GetOp() == "<"
			}
		default:
			err = status.Errorf(codes.InvalidArgument, "where %s: operator %q is not one of = < <= > >=", f, w.GetOp())
		}
		if err != nil {
			return nil, err
		}
	}
	return sc, nil
}

// ParseWhere reads a CLI condition such as email=a@b or 'age>=30': the
// value is JSON if it parses as a JSON scalar, else a string.
func ParseWhere(s string) (*pb.ListWhere, error) {
	i := strings.IndexAny(s, "=<>")
	if i <= 0 {
		return nil, fmt.Errorf("where %q: write FIELD=VALUE, FIELD>=VALUE, FIELD>VALUE, FIELD<=VALUE or FIELD<VALUE", s)
	}
	op := s[i : i+1]
	if len(s) > i+1 && s[i+1] == '=' && op != "=" {
		op += "="
	}
	val := s[i+len(op):]
	if _, ok := actor.EncodeIndexValue(json.RawMessage(val)); !ok {
		b, _ := json.Marshal(val)
		val = string(b)
	}
	return &pb.ListWhere{Field: s[:i], Op: op, Value: val}, nil
}

// JSONListRequest mirrors pb.ListRequest; where values are JSON scalars.
type JSONListRequest struct {
	Tenant    string          `json:"tenant"`
	Workspace string          `json:"workspace"`
	Type      string          `json:"type"`
	Prefix    string          `json:"prefix"`
	PageToken string          `json:"page_token"`
	Limit     uint32          `json:"limit"`
	Where     []JSONListWhere `json:"where"`
}

// JSONListWhere mirrors pb.ListWhere.
type JSONListWhere struct {
	Field string          `json:"field"`
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value"`
}

// JSONListItem mirrors pb.ListItem; the state is JSON when it is.
type JSONListItem struct {
	ID          string          `json:"id"`
	Version     uint64          `json:"version"`
	State       json.RawMessage `json:"state,omitempty"`
	StateBase64 string          `json:"state_base64,omitempty"`
	Shard       uint32          `json:"shard"`
}

// JSONListResponse mirrors pb.ListResponse.
type JSONListResponse struct {
	Items          []JSONListItem    `json:"items"`
	NextPageToken  string            `json:"next_page_token,omitempty"`
	Count          uint64            `json:"count"`
	AppliedIndexes map[string]uint64 `json:"applied_indexes"`
}

func (s *Server) httpList(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	var in JSONListRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	req := &pb.ListRequest{Tenant: in.Tenant, Workspace: in.Workspace, ActorType: in.Type, Prefix: in.Prefix, PageToken: in.PageToken, Limit: in.Limit}
	for _, wh := range in.Where {
		req.Where = append(req.Where, &pb.ListWhere{Field: wh.Field, Op: wh.Op, Value: string(wh.Value)})
	}
	resp, err := s.List(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &JSONListResponse{Items: make([]JSONListItem, 0, len(resp.GetItems())), NextPageToken: resp.GetNextPageToken(),
		Count: resp.GetCount(), AppliedIndexes: map[string]uint64{}}
	for _, it := range resp.GetItems() {
		j := JSONListItem{ID: it.GetId(), Version: it.GetVersion(), Shard: it.GetShard()}
		j.State, j.StateBase64 = rawOrBase64(it.GetState())
		out.Items = append(out.Items, j)
	}
	for k, v := range resp.GetAppliedIndexes() {
		out.AppliedIndexes[fmt.Sprint(k)] = v
	}
	return out, nil
}
