package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// JSONSubmitAsyncResponse mirrors pb.SubmitAsyncResponse.
type JSONSubmitAsyncResponse struct {
	Stream    string `json:"stream"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
	Shard     uint32 `json:"shard"`
	CommandID string `json:"command_id"`
}

// JSONWatchEvent is one line of GET /v1/watch: an event and its sequence
// (pass it as after_sequence to resume), or, as the last line of a stream
// that failed after it started, the error.
type JSONWatchEvent struct {
	Event     *JSONEvent     `json:"event,omitempty"`
	Rejection *JSONRejection `json:"rejection,omitempty"`
	Sequence  uint64         `json:"sequence,omitempty"`
	Error     *JSONError     `json:"error,omitempty"`
}

func (s *Server) httpSubmitAsync(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	var in JSONSubmitRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	resp, err := s.SubmitAsync(ctx, in.proto())
	if err != nil {
		return nil, err
	}
	return &JSONSubmitAsyncResponse{
		Stream: resp.GetStream(), Sequence: resp.GetSequence(), Duplicate: resp.GetDuplicate(),
		Shard: resp.GetShard(), CommandID: resp.GetCommandId(),
	}, nil
}

// watchWriteTimeout bounds writing one event of GET /v1/watch to a client.
const watchWriteTimeout = 30 * time.Second

// watchParams are the query parameters of GET /v1/watch: the WatchRequest
// fields under their proto names.
var watchParams = []string{"tenant", "workspace", "actor_type", "entity_id", "event_type", "after_sequence", "from_beginning", "include_rejections"}

// parseWatchQuery reads a WatchRequest from the query string. Unknown
// parameters are refused, as unknown JSON fields are elsewhere: a misspelt
// filter would otherwise widen the watch silently.
func parseWatchQuery(q url.Values) (*pb.WatchRequest, error) {
	for k := range q {
		if !slices.Contains(watchParams, k) {
			return nil, status.Errorf(codes.InvalidArgument, "unknown query parameter %q; parameters: %s", k, strings.Join(watchParams, ", "))
		}
		if len(q[k]) > 1 {
			return nil, status.Errorf(codes.InvalidArgument, "query parameter %q is given %d times; give it once", k, len(q[k]))
		}
	}
	req := &pb.WatchRequest{
		Tenant: q.Get("tenant"), Workspace: q.Get("workspace"), ActorType: q.Get("actor_type"),
		EntityId: q.Get("entity_id"), EventType: q.Get("event_type"),
	}
	if v := q.Get("after_sequence"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "after_sequence %q is not a sequence number (a non-negative integer)", v)
		}
		req.AfterSequence = n
	}
	for _, b := range []struct {
		name string
		to   *bool
	}{{"from_beginning", &req.FromBeginning}, {"include_rejections", &req.IncludeRejections}} {
		v, ok := q[b.name]
		if !ok {
			continue
		}
		// A bare ?from_beginning means true.
		if v[0] == "" {
			*b.to = true
			continue
		}
		val, err := strconv.ParseBool(v[0])
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s %q is not true or false", b.name, v[0])
		}
		*b.to = val
	}
	return req, nil
}

// httpWatch serves GET /v1/watch as newline-delimited JSON, one
// JSONWatchEvent per line, flushed per event. Errors found before the stream
// starts get the usual status and JSONError body; a failure after it started
// is the last line, {"error": ...}, since the status line is already sent.
func (s *Server) httpWatch(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSON(w, http.StatusMethodNotAllowed, JSONError{Code: "method_not_allowed", Message: r.URL.Path + " takes GET"})
		return
	}
	ctx := s.tracing.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := tracer.Start(ctx, "GET "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	ctx, ok := s.httpAuthenticate(ctx, w, r)
	if !ok {
		return
	}
	ctx = context.WithValue(ctx, connKey{}, r.RemoteAddr)
	req, err := parseWatchQuery(r.URL.Query())
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	f, id, err := s.watchFilter(ctx, req)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	release, err := s.watches.acquire(ctx, id)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	// A watch lasts: the server's read and write timeouts, meant for one
	// request and its answer, would cut it off (the read one by cancelling
	// the request once it passes). Each event gets a write deadline instead,
	// so a client that stops reading is still dropped.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	// Flush the status now so the client knows the watch was accepted.
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	err = s.runWatch(ctx, f, func(ev *pb.WatchEvent) error {
		_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
		line := JSONWatchEvent{Sequence: ev.GetSequence()}
		if rj := ev.GetRejection(); rj != nil {
			line.Rejection = rejectionJSON(rj)
		} else {
			line.Event = eventJSON(ev.GetEvent())
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
		return rc.Flush()
	})
	if err == nil || r.Context().Err() != nil {
		return // the client went away; nobody to tell
	}
	st := status.Convert(err)
	code := codeNames[st.Code()]
	if code == "" {
		code = fmt.Sprint(st.Code())
	}
	_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
	_ = enc.Encode(JSONWatchEvent{Error: &JSONError{Code: code, Message: st.Message()}})
	_ = rc.Flush()
}
