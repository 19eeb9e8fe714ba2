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

// DeadLetterAdmin is the optional capability of an AsyncBackend that lists
// and redrives the dead-letter stream (ingress.Manager). Without it
// Admin.ListDeadLetters and Admin.RedriveDeadLetter answer Unimplemented.
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
		return status.Errorf(codes.NotFound, "%v: list them with Admin.ListDeadLetters (GET /v1/admin/dead_letters)", err)
	case errors.Is(err, stream.ErrNotRedrivable):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return readError(err, "the dead-letter stream", what)
}

// ListDeadLetters lists the dead-letter stream; only an admin may: it holds
// every tenant's failed commands.
func (a adminServer) ListDeadLetters(ctx context.Context, req *pb.ListDeadLettersRequest) (*pb.ListDeadLettersResponse, error) {
	dl, err := a.s.deadLetterAdmin(ctx, "listing dead letters")
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = DefaultDeadLetterPage
	case limit > MaxDeadLetterPage:
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is over %d; page with after", limit, MaxDeadLetterPage)
	}
	list, next, err := dl.DeadLetters(ctx, req.GetAfter(), limit)
	if err != nil {
		return nil, deadLetterError(err, "the listing")
	}
	out := &pb.ListDeadLettersResponse{Next: next, DeadLetters: make([]*pb.DeadLetter, 0, len(list))}
	for _, d := range list {
		p := &pb.DeadLetter{
			Sequence: d.Sequence, Subject: d.Subject, Shard: d.Shard, At: d.Time.UnixMilli(), Kind: d.Kind,
			Reason: d.Reason, Source: d.Source, Size: uint64(max(d.Size, 0)), Digest: d.Digest, Body: d.Body,
			Headers: d.Headers, Redrivable: d.Redrivable, NotRedrivable: d.NotRedrivable,
		}
		if len(d.Command) > 0 {
			var c pb.Command
			if protojson.Unmarshal(d.Command, &c) == nil {
				p.Command = &c
			}
		}
		out.DeadLetters = append(out.DeadLetters, p)
	}
	return out, nil
}

// RedriveDeadLetter publishes a poison dead letter's command again.
func (a adminServer) RedriveDeadLetter(ctx context.Context, req *pb.RedriveDeadLetterRequest) (*pb.RedriveDeadLetterResponse, error) {
	dl, err := a.s.deadLetterAdmin(ctx, "redriving dead letters")
	if err != nil {
		return nil, err
	}
	if req.GetSequence() == 0 {
		return nil, status.Error(codes.InvalidArgument, `sequence is required: the dead letter's sequence, e.g. {"sequence": 3}`)
	}
	enq, err := dl.Redrive(ctx, req.GetSequence())
	if err != nil {
		return nil, deadLetterError(err, "the redrive")
	}
	a.s.log.Info("dead letter redriven", "sequence", req.GetSequence(), "stream", enq.Stream, "to", enq.Sequence, "duplicate", enq.Duplicate)
	return &pb.RedriveDeadLetterResponse{Stream: enq.Stream, Sequence: enq.Sequence, Shard: enq.Shard, Duplicate: enq.Duplicate}, nil
}

// The HTTP twins (registered by consoleRoutes):
//
//	GET  /v1/admin/dead_letters?after=&limit=  -> JSONDeadLettersResponse
//	POST /v1/admin/dead_letters/redrive  JSONRedriveRequest -> JSONRedriveResponse

// JSONDeadLetter mirrors pb.DeadLetter. Body is the kept prefix of the
// original body when it is UTF-8, else BodyBase64; Command is the body
// decoded as a command (protojson), when it is one.
type JSONDeadLetter struct {
	Sequence      uint64            `json:"sequence"`
	Subject       string            `json:"subject"`
	Shard         uint32            `json:"shard"`
	At            int64             `json:"at"`
	Kind          string            `json:"kind"`
	Reason        string            `json:"reason"`
	Source        string            `json:"source"`
	Size          uint64            `json:"size"`
	Digest        string            `json:"digest"`
	Body          string            `json:"body,omitempty"`
	BodyBase64    string            `json:"body_base64,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Command       json.RawMessage   `json:"command,omitempty"`
	Redrivable    bool              `json:"redrivable"`
	NotRedrivable string            `json:"not_redrivable,omitempty"`
}

// JSONDeadLettersResponse mirrors pb.ListDeadLettersResponse.
type JSONDeadLettersResponse struct {
	DeadLetters []JSONDeadLetter `json:"dead_letters"`
	Next        uint64           `json:"next,omitempty"`
}

// JSONRedriveRequest mirrors pb.RedriveDeadLetterRequest.
type JSONRedriveRequest struct {
	Sequence uint64 `json:"sequence"`
}

// JSONRedriveResponse mirrors pb.RedriveDeadLetterResponse.
type JSONRedriveResponse struct {
	Stream    string `json:"stream"`
	Sequence  uint64 `json:"sequence"`
	Shard     uint32 `json:"shard"`
	Duplicate bool   `json:"duplicate"`
}

func (s *Server) httpDeadLetters(ctx context.Context, _ http.ResponseWriter, r *http.Request) (any, error) {
	// Authorize before reading the query: a tenant learns nothing of it.
	if _, err := s.deadLetterAdmin(ctx, "listing dead letters"); err != nil {
		return nil, err
	}
	req := &pb.ListDeadLettersRequest{}
	for k, v := range r.URL.Query() {
		switch {
		case len(v) != 1:
			return nil, status.Errorf(codes.InvalidArgument, "query parameter %q is given %d times; give it once", k, len(v))
		case k == "after":
			n, err := strconv.ParseUint(v[0], 10, 64)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "after %q is not a sequence number (a non-negative integer)", v[0])
			}
			req.After = n
		case k == "limit":
			n, err := strconv.Atoi(v[0])
			if err != nil || n < 1 || n > MaxDeadLetterPage {
				return nil, status.Errorf(codes.InvalidArgument, "limit %q is not a whole number from 1 to %d", v[0], MaxDeadLetterPage)
			}
			req.Limit = uint32(n)
		default:
			return nil, status.Errorf(codes.InvalidArgument, "unknown query parameter %q; parameters: after, limit", k)
		}
	}
	resp, err := adminServer{s: s}.ListDeadLetters(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &JSONDeadLettersResponse{DeadLetters: make([]JSONDeadLetter, 0, len(resp.GetDeadLetters())), Next: resp.GetNext()}
	for _, d := range resp.GetDeadLetters() {
		out.DeadLetters = append(out.DeadLetters, DeadLetterJSON(d))
	}
	return out, nil
}

// DeadLetterJSON is d as the HTTP route answers it; `rhizon dead-letters
// list --json` prints the same, so scripts read one shape.
func DeadLetterJSON(d *pb.DeadLetter) JSONDeadLetter {
	j := JSONDeadLetter{
		Sequence: d.GetSequence(), Subject: d.GetSubject(), Shard: d.GetShard(), At: d.GetAt(), Kind: d.GetKind(),
		Reason: d.GetReason(), Source: d.GetSource(), Size: d.GetSize(), Digest: d.GetDigest(), Headers: d.GetHeaders(),
		Redrivable: d.GetRedrivable(), NotRedrivable: d.GetNotRedrivable(),
	}
	if utf8.Valid(d.GetBody()) {
		j.Body = string(d.GetBody())
	} else {
		j.BodyBase64 = base64.StdEncoding.EncodeToString(d.GetBody())
	}
	if c := d.GetCommand(); c != nil {
		j.Command, _ = protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	}
	return j
}

func (s *Server) httpRedrive(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	if _, err := s.deadLetterAdmin(ctx, "redriving dead letters"); err != nil {
		return nil, err
	}
	var in JSONRedriveRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	resp, err := adminServer{s: s}.RedriveDeadLetter(ctx, &pb.RedriveDeadLetterRequest{Sequence: in.Sequence})
	if err != nil {
		return nil, err
	}
	return &JSONRedriveResponse{Stream: resp.GetStream(), Sequence: resp.GetSequence(), Shard: resp.GetShard(), Duplicate: resp.GetDuplicate()}, nil
}
