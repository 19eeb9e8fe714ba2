package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// MaxHTTPBodyBytes bounds an HTTP request body, for the same reason as
// MaxRecvMsgSize: a little over the payload limit, so an oversized payload
// gets the precise message and a huge body is cut off early.
const MaxHTTPBodyBytes = actor.MaxPayloadBytes + 64<<10

// The HTTP/JSON shapes. They mirror the protobuf messages field for field
// (snake_case names, as protojson with UseProtoNames), with three deliberate
// differences that make curl pleasant: payloads, replies and state are plain
// JSON values rather than base64; 64-bit numbers are JSON numbers rather than
// strings; enums are short lowercase words ("accepted", "conflict", "stale").
// A payload or state that is not JSON (an actor may store bytes) is returned
// base64-encoded in the matching *_base64 field instead.

// JSONAddress mirrors pb.Address.
type JSONAddress struct {
	Tenant    string `json:"tenant,omitempty"`
	Workspace string `json:"workspace,omitempty"`
	ActorType string `json:"actor_type"`
	EntityID  string `json:"entity_id"`
}

// JSONPrincipal mirrors pb.Principal.
type JSONPrincipal struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// JSONSubmitRequest mirrors pb.SubmitRequest; Payload is any JSON value.
type JSONSubmitRequest struct {
	Address         *JSONAddress    `json:"address"`
	Type            string          `json:"type"`
	Payload         json.RawMessage `json:"payload,omitempty"`
	IdempotencyKey  string          `json:"idempotency_key"`
	ExpectedVersion *uint64         `json:"expected_version,omitempty"`
	CommandID       string          `json:"command_id,omitempty"`
	CausationID     string          `json:"causation_id,omitempty"`
	CorrelationID   string          `json:"correlation_id,omitempty"`
	OnBehalfOf      *JSONPrincipal  `json:"on_behalf_of,omitempty"`
}

// JSONEvent mirrors pb.Event.
type JSONEvent struct {
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	Address       *JSONAddress    `json:"address"`
	Version       uint64          `json:"version"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payload_base64,omitempty"`
	At            int64           `json:"at"`
	CommandID     string          `json:"command_id"`
	CausationID   string          `json:"causation_id,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Traceparent   string          `json:"traceparent,omitempty"`
	Principal     *JSONPrincipal  `json:"principal,omitempty"`
	Shard         uint32          `json:"shard"`
	Index         uint64          `json:"index"`
	Ordinal       uint32          `json:"ordinal"`
}

// JSONResult mirrors pb.Result.
type JSONResult struct {
	CommandID   string          `json:"command_id"`
	Status      string          `json:"status"`
	Reason      string          `json:"reason,omitempty"`
	Code        string          `json:"code,omitempty"`
	Message     string          `json:"message,omitempty"`
	Version     uint64          `json:"version"`
	Events      []JSONEvent     `json:"events,omitempty"`
	Index       uint64          `json:"index"`
	Duplicate   bool            `json:"duplicate,omitempty"`
	Replay      bool            `json:"replay,omitempty"`
	Reply       json.RawMessage `json:"reply,omitempty"`
	ReplyBase64 string          `json:"reply_base64,omitempty"`
}

// JSONSubmitResponse mirrors pb.SubmitResponse.
type JSONSubmitResponse struct {
	Result *JSONResult `json:"result"`
	Shard  uint32      `json:"shard"`
}

// JSONSubmitBatchRequest mirrors pb.SubmitBatchRequest: at most
// MaxSubmitBatch commands.
type JSONSubmitBatchRequest struct {
	Commands []*JSONSubmitRequest `json:"commands"`
}

// JSONSubmitBatchResponse mirrors pb.SubmitBatchResponse: one outcome per
// command, in the request's order.
type JSONSubmitBatchResponse struct {
	Outcomes []JSONSubmitOutcome `json:"outcomes"`
}

// JSONSubmitOutcome is what /v1/submit would have answered for one command:
// its result and shard, or its error.
type JSONSubmitOutcome struct {
	Result *JSONResult `json:"result,omitempty"`
	Shard  *uint32     `json:"shard,omitempty"` // with a result (shard 0 included)
	Error  *JSONError  `json:"error,omitempty"`
}

// JSONGetRequest mirrors pb.GetRequest. Consistency is "linearizable" (the
// default) or "stale".
type JSONGetRequest struct {
	Address     *JSONAddress `json:"address"`
	Consistency string       `json:"consistency,omitempty"`
}

// JSONGetResponse mirrors pb.GetResponse; State is the entity's JSON state.
type JSONGetResponse struct {
	Address      *JSONAddress    `json:"address"`
	Version      uint64          `json:"version"`
	State        json.RawMessage `json:"state,omitempty"`
	StateBase64  string          `json:"state_base64,omitempty"`
	Found        bool            `json:"found"`
	Shard        uint32          `json:"shard"`
	AppliedIndex uint64          `json:"applied_index"`
}

// JSONHistoryRequest mirrors pb.HistoryRequest.
type JSONHistoryRequest struct {
	Address           *JSONAddress `json:"address"`
	IncludeRejections bool         `json:"include_rejections,omitempty"`
	PageSize          uint32       `json:"page_size,omitempty"`
	PageToken         string       `json:"page_token,omitempty"`
	Consistency       string       `json:"consistency,omitempty"`
}

// JSONRejection mirrors pb.Rejection.
type JSONRejection struct {
	Type            string         `json:"type"`
	CommandID       string         `json:"command_id"`
	CommandType     string         `json:"command_type"`
	Address         *JSONAddress   `json:"address"`
	Reason          string         `json:"reason"`
	Code            string         `json:"code,omitempty"`
	Message         string         `json:"message,omitempty"`
	At              int64          `json:"at"`
	Principal       *JSONPrincipal `json:"principal,omitempty"`
	IdempotencyKey  string         `json:"idempotency_key,omitempty"`
	ExpectedVersion *uint64        `json:"expected_version,omitempty"`
	ActualVersion   uint64         `json:"actual_version"`
	CausationID     string         `json:"causation_id,omitempty"`
	CorrelationID   string         `json:"correlation_id,omitempty"`
	Traceparent     string         `json:"traceparent,omitempty"`
	Shard           uint32         `json:"shard"`
	Index           uint64         `json:"index"`
	Ordinal         uint32         `json:"ordinal"`
}

// JSONHistoryRecord mirrors the pb.HistoryRecord oneof: exactly one field set.
type JSONHistoryRecord struct {
	Event     *JSONEvent     `json:"event,omitempty"`
	Rejection *JSONRejection `json:"rejection,omitempty"`
}

// JSONHistoryResponse mirrors pb.HistoryResponse.
type JSONHistoryResponse struct {
	Records       []JSONHistoryRecord `json:"records"`
	NextPageToken string              `json:"next_page_token,omitempty"`
	// TrimmedBefore is set when history retention deleted the entity's
	// records before this position (README: Retention).
	TrimmedBefore *JSONPosition `json:"trimmed_before,omitempty"`
}

// JSONPosition is a log position (pb.Position).
type JSONPosition struct {
	Index   uint64 `json:"index"`
	Ordinal uint32 `json:"ordinal"`
}

// JSONShardStatus mirrors pb.ShardStatus.
type JSONShardStatus struct {
	Shard        uint32 `json:"shard"`
	Role         string `json:"role"`
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastLogIndex uint64 `json:"last_log_index"`
	StateHash    string `json:"state_hash"`
	RaftGroup    uint32 `json:"raft_group"`
}

// JSONStatusResponse mirrors pb.StatusResponse.
type JSONStatusResponse struct {
	NodeID     string            `json:"node_id"`
	Version    string            `json:"version"`
	ShardCount uint32            `json:"shard_count"`
	RaftGroups uint32            `json:"raft_groups"`
	Shards     []JSONShardStatus `json:"shards"`
	ActorTypes []string          `json:"actor_types"`
}

// JSONError is the body of every HTTP error. Code is the gRPC code in
// snake_case; Outcome is "unknown" when a write may or may not have been
// applied, "not_applied" when it definitely was not.
type JSONError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Outcome string `json:"outcome,omitempty"`
}

// HTTPHandler serves the Gateway calls over HTTP/JSON:
//
//	POST /v1/submit        JSONSubmitRequest  -> JSONSubmitResponse
//	POST /v1/submit_batch  JSONSubmitBatchRequest -> JSONSubmitBatchResponse
//	POST /v1/submit_async  JSONSubmitRequest  -> JSONSubmitAsyncResponse
//	GET  /v1/watch?tenant=&workspace=&actor_type=&entity_id=&event_type=&after_sequence=&from_beginning=
//	                                          -> JSONWatchEvent per line (NDJSON)
//	POST /v1/get      JSONGetRequest     -> JSONGetResponse
//	POST /v1/history  JSONHistoryRequest -> JSONHistoryResponse
//	POST /v1/list     JSONListRequest    -> JSONListResponse
//	GET  /v1/status                      -> JSONStatusResponse
//	GET  /healthz     liveness, no token
//	GET  /readyz      health, no token: 200 READY or DEGRADED, 503 FAILED (JSONHealth)
//
// The /v1 routes need "Authorization: Bearer <token>". Errors carry the HTTP
// status derived from the gRPC code and a JSONError body.
func (s *Server) HTTPHandler() http.Handler {
	rt := &routes{mux: http.NewServeMux()}
	rt.api(s, http.MethodPost, "/v1/submit", s.httpSubmit)
	rt.api(s, http.MethodPost, "/v1/submit_batch", s.httpSubmitBatch)
	rt.api(s, http.MethodPost, "/v1/submit_async", s.httpSubmitAsync)
	rt.handle(http.MethodGet, "/v1/watch", s.httpWatch)
	rt.api(s, http.MethodPost, "/v1/get", s.httpGet)
	rt.api(s, http.MethodPost, "/v1/history", s.httpHistory)
	rt.api(s, http.MethodPost, "/v1/result", s.httpGetResult)
	rt.api(s, http.MethodPost, "/v1/list", s.httpList)
	rt.api(s, http.MethodGet, "/v1/status", s.httpStatus)
	// The web console's routes (console_http.go).
	s.consoleRoutes(rt)
	rt.handle(http.MethodGet, "/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	rt.handle(http.MethodGet, "/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyCheckTimeout)
		defer cancel()
		h := s.Health(ctx)
		code := http.StatusOK
		if !h.Serving() {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, JSONHealth{Ready: h.Serving(), State: h.State, Reasons: h.Reasons, Shards: jsonShardHealth(h.Shards)})
	})
	list := strings.Join(rt.names, ", ")
	rt.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, JSONError{Code: "not_found", Message: fmt.Sprintf(
			"no route %s %s; routes: %s", r.Method, r.URL.Path, list)})
	})
	return rt.mux
}

// routes registers the HTTP routes and remembers them, so the list a 404
// answers with is what is served.
type routes struct {
	mux   *http.ServeMux
	names []string
}

func (rt *routes) handle(method, path string, h http.HandlerFunc) {
	rt.mux.HandleFunc(path, h)
	rt.names = append(rt.names, method+" "+path)
}

// api registers an authenticated JSON route (httpRoute).
func (rt *routes) api(s *Server, method, path string, call func(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error)) {
	rt.handle(method, path, s.httpRoute(method, call))
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeJSON(w, http.StatusMethodNotAllowed, JSONError{Code: "method_not_allowed", Message: r.URL.Path + " takes GET"})
	return false
}

var tracer = otel.Tracer("github.com/rhizon/rhizon/gateway")

// httpRoute wraps a call: method check, trace context extraction and a
// server span (the HTTP twin of the otelgrpc handler), the bearer token into
// the context, and error rendering.
func (s *Server) httpRoute(method string, call func(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeJSON(w, http.StatusMethodNotAllowed, JSONError{Code: "method_not_allowed", Message: fmt.Sprintf("%s takes %s", r.URL.Path, method)})
			return
		}
		ctx := s.tracing.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		ctx, ok := s.httpAuthenticate(ctx, w, r)
		if !ok {
			return
		}
		out, err := call(ctx, w, r)
		if err != nil {
			writeHTTPError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// identityKey carries the identity the HTTP layer authenticated, so the
// gRPC methods it calls do not look the token up again.
type identityKey struct{}

// httpAuthenticate authenticates r before anything reads its body: an
// unauthenticated client gets its 401 without the server spending a byte of
// reading or parsing on what it sent, and the connection is closed rather
// than drained for reuse.
func (s *Server) httpAuthenticate(ctx context.Context, w http.ResponseWriter, r *http.Request) (context.Context, bool) {
	ctx = context.WithValue(ctx, tokenKey{}, r.Header.Get("Authorization"))
	id, err := s.authenticate(ctx)
	if err != nil {
		if r.ContentLength != 0 {
			w.Header().Set("Connection", "close")
		}
		writeHTTPError(w, err)
		return ctx, false
	}
	return context.WithValue(ctx, identityKey{}, id), true
}

// decodeBody reads one JSON object from the body into v, refusing unknown
// fields (a typo such as "idempotencyKey" would otherwise be silently lost)
// and bodies over MaxHTTPBodyBytes.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxHTTPBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errBodyTooLarge
		}
		return status.Errorf(codes.InvalidArgument, "request body could not be read: %v", err)
	}
	// encoding/json would replace invalid UTF-8 with U+FFFD and keep the
	// last of duplicate keys, silently; refuse both so that what is stored
	// is what the client sent.
	if err := checkJSONText(data); err != nil {
		return status.Errorf(codes.InvalidArgument, "request body %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return errBodyTooLarge
		case errors.Is(err, io.EOF):
			return status.Error(codes.InvalidArgument, "request body is empty; send a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return status.Errorf(codes.InvalidArgument, "request body: %s (field names are snake_case, e.g. idempotency_key)", strings.TrimPrefix(err.Error(), "json: "))
		}
		return status.Errorf(codes.InvalidArgument, "request body is not valid JSON for this call: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "request body has data after the JSON object; send exactly one object")
	}
	return nil
}

var errBodyTooLarge = status.Errorf(codes.InvalidArgument, "request body is over %d bytes; the payload limit is %d bytes", MaxHTTPBodyBytes, actor.MaxPayloadBytes)

func (s *Server) httpSubmit(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	var in JSONSubmitRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	resp, err := s.Submit(ctx, in.proto())
	if err != nil {
		return nil, err
	}
	return &JSONSubmitResponse{Result: resultJSON(resp.GetResult()), Shard: resp.GetShard()}, nil
}

func (s *Server) httpSubmitBatch(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	var in JSONSubmitBatchRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	req := &pb.SubmitBatchRequest{Commands: make([]*pb.SubmitRequest, len(in.Commands))}
	for i, c := range in.Commands {
		if c == nil {
			return nil, status.Errorf(codes.InvalidArgument, "commands[%d] is null; send a command object", i)
		}
		req.Commands[i] = c.proto()
	}
	resp, err := s.SubmitBatch(ctx, req)
	if err != nil {
		return nil, err
	}
	out := &JSONSubmitBatchResponse{Outcomes: make([]JSONSubmitOutcome, len(resp.GetOutcomes()))}
	for i, o := range resp.GetOutcomes() {
		if e := o.GetError(); e != nil {
			je, _ := jsonError(status.FromProto(e))
			out.Outcomes[i].Error = &je
			continue
		}
		shard := o.GetResponse().GetShard()
		out.Outcomes[i].Result, out.Outcomes[i].Shard = resultJSON(o.GetResponse().GetResult()), &shard
	}
	return out, nil
}

// proto converts the HTTP shape to the gRPC request; a JSON null payload is
// no payload.
func (in *JSONSubmitRequest) proto() *pb.SubmitRequest {
	req := &pb.SubmitRequest{
		Address: in.Address.proto(), Type: in.Type, IdempotencyKey: in.IdempotencyKey,
		ExpectedVersion: in.ExpectedVersion, CommandId: in.CommandID,
		CausationId: in.CausationID, CorrelationId: in.CorrelationID,
	}
	if p := bytes.TrimSpace(in.Payload); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		req.Payload = p
	}
	if in.OnBehalfOf != nil {
		req.OnBehalfOf = &pb.Principal{Id: in.OnBehalfOf.ID, Type: in.OnBehalfOf.Type}
	}
	return req
}

func (s *Server) httpGet(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	var in JSONGetRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	c, err := parseConsistency(in.Consistency)
	if err != nil {
		return nil, err
	}
	resp, err := s.Get(ctx, &pb.GetRequest{Address: in.Address.proto(), Consistency: c})
	if err != nil {
		return nil, err
	}
	out := &JSONGetResponse{
		Address: addressJSON(resp.GetAddress()), Version: resp.GetVersion(), Found: resp.GetFound(),
		Shard: resp.GetShard(), AppliedIndex: resp.GetAppliedIndex(),
	}
	out.State, out.StateBase64 = rawOrBase64(resp.GetState())
	return out, nil
}

func (s *Server) httpHistory(ctx context.Context, w http.ResponseWriter, r *http.Request) (any, error) {
	var in JSONHistoryRequest
	if err := decodeBody(w, r, &in); err != nil {
		return nil, err
	}
	c, err := parseConsistency(in.Consistency)
	if err != nil {
		return nil, err
	}
	resp, err := s.History(ctx, &pb.HistoryRequest{
		Address: in.Address.proto(), IncludeRejections: in.IncludeRejections,
		PageSize: in.PageSize, PageToken: in.PageToken, Consistency: c,
	})
	if err != nil {
		return nil, err
	}
	out := &JSONHistoryResponse{Records: make([]JSONHistoryRecord, 0, len(resp.GetRecords())), NextPageToken: resp.GetNextPageToken()}
	if t := resp.GetTrimmedBefore(); t != nil {
		out.TrimmedBefore = &JSONPosition{Index: t.GetIndex(), Ordinal: t.GetOrdinal()}
	}
	for _, rec := range resp.GetRecords() {
		switch {
		case rec.GetEvent() != nil:
			out.Records = append(out.Records, JSONHistoryRecord{Event: eventJSON(rec.GetEvent())})
		case rec.GetRejection() != nil:
			out.Records = append(out.Records, JSONHistoryRecord{Rejection: rejectionJSON(rec.GetRejection())})
		}
	}
	return out, nil
}

func (s *Server) httpStatus(ctx context.Context, _ http.ResponseWriter, _ *http.Request) (any, error) {
	resp, err := s.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return nil, err
	}
	out := &JSONStatusResponse{
		NodeID: resp.GetNodeId(), Version: resp.GetVersion(), ShardCount: resp.GetShardCount(), RaftGroups: resp.GetRaftGroups(),
		Shards: make([]JSONShardStatus, 0, len(resp.GetShards())), ActorTypes: resp.GetActorTypes(),
	}
	for _, sh := range resp.GetShards() {
		out.Shards = append(out.Shards, JSONShardStatus{
			Shard: sh.GetShard(), Role: sh.GetRole(), Leader: sh.GetLeader(), Term: sh.GetTerm(),
			AppliedIndex: sh.GetAppliedIndex(), CommitIndex: sh.GetCommitIndex(),
			LastLogIndex: sh.GetLastLogIndex(), StateHash: sh.GetStateHash(), RaftGroup: sh.GetRaftGroup(),
		})
	}
	if out.ActorTypes == nil {
		out.ActorTypes = []string{}
	}
	return out, nil
}

// parseConsistency accepts the short names and the protobuf enum names.
func parseConsistency(s string) (pb.Consistency, error) {
	switch strings.ToLower(s) {
	case "", "linearizable", "consistency_linearizable":
		return pb.Consistency_CONSISTENCY_LINEARIZABLE, nil
	case "stale", "consistency_stale":
		return pb.Consistency_CONSISTENCY_STALE, nil
	}
	return 0, status.Errorf(codes.InvalidArgument, "consistency %q is not one of linearizable, stale", s)
}

func (a *JSONAddress) proto() *pb.Address {
	if a == nil {
		return nil
	}
	return &pb.Address{Tenant: a.Tenant, Workspace: a.Workspace, ActorType: a.ActorType, EntityId: a.EntityID}
}

func addressJSON(a *pb.Address) *JSONAddress {
	if a == nil {
		return nil
	}
	return &JSONAddress{Tenant: a.GetTenant(), Workspace: a.GetWorkspace(), ActorType: a.GetActorType(), EntityID: a.GetEntityId()}
}

func principalJSON(p *pb.Principal) *JSONPrincipal {
	if p == nil {
		return nil
	}
	return &JSONPrincipal{ID: p.GetId(), Type: p.GetType()}
}

// rawOrBase64 returns b as a raw JSON value when it is JSON, else as base64.
func rawOrBase64(b []byte) (json.RawMessage, string) {
	if len(b) == 0 {
		return nil, ""
	}
	if json.Valid(b) {
		return json.RawMessage(b), ""
	}
	return nil, base64.StdEncoding.EncodeToString(b)
}

func statusName(s pb.Status) string {
	switch s {
	case pb.Status_STATUS_ACCEPTED:
		return "accepted"
	case pb.Status_STATUS_REJECTED:
		return "rejected"
	}
	return "unspecified"
}

func reasonName(r pb.Reason) string {
	switch r {
	case pb.Reason_REASON_NONE:
		return ""
	case pb.Reason_REASON_CONFLICT:
		return "conflict"
	case pb.Reason_REASON_VIOLATION:
		return "violation"
	case pb.Reason_REASON_INVALID:
		return "invalid"
	case pb.Reason_REASON_BUSINESS:
		return "business"
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "REASON_"))
}

func eventJSON(e *pb.Event) *JSONEvent {
	out := &JSONEvent{
		ID: e.GetId(), Type: e.GetType(), Address: addressJSON(e.GetAddress()), Version: e.GetVersion(),
		At: e.GetAt(), CommandID: e.GetCommandId(), CausationID: e.GetCausationId(),
		CorrelationID: e.GetCorrelationId(), Traceparent: e.GetTraceparent(),
		Principal: principalJSON(e.GetPrincipal()), Shard: e.GetShard(), Index: e.GetIndex(), Ordinal: e.GetOrdinal(),
	}
	out.Payload, out.PayloadBase64 = rawOrBase64(e.GetPayload())
	return out
}

func resultJSON(r *pb.Result) *JSONResult {
	if r == nil {
		return nil
	}
	out := &JSONResult{
		CommandID: r.GetCommandId(), Status: statusName(r.GetStatus()), Reason: reasonName(r.GetReason()),
		Code: r.GetCode(), Message: r.GetMessage(), Version: r.GetVersion(), Index: r.GetIndex(),
		Duplicate: r.GetDuplicate(), Replay: r.GetReplay(),
	}
	for _, e := range r.GetEvents() {
		out.Events = append(out.Events, *eventJSON(e))
	}
	out.Reply, out.ReplyBase64 = rawOrBase64(r.GetReply())
	return out
}

func rejectionJSON(r *pb.Rejection) *JSONRejection {
	return &JSONRejection{
		Type: r.GetType(), CommandID: r.GetCommandId(), CommandType: r.GetCommandType(),
		Address: addressJSON(r.GetAddress()), Reason: reasonName(r.GetReason()), Code: r.GetCode(),
		Message: r.GetMessage(), At: r.GetAt(), Principal: principalJSON(r.GetPrincipal()),
		IdempotencyKey: r.GetIdempotencyKey(), ExpectedVersion: r.ExpectedVersion,
		ActualVersion: r.GetActualVersion(), CausationID: r.GetCausationId(),
		CorrelationID: r.GetCorrelationId(), Traceparent: r.GetTraceparent(),
		Shard: r.GetShard(), Index: r.GetIndex(), Ordinal: r.GetOrdinal(),
	}
}

// HTTPStatus maps a gRPC code to the HTTP status the HTTP/JSON API answers
// with. It follows google.rpc.Code's documented HTTP mapping.
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Canceled:
		return 499 // client closed request
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// jsonError renders st; unknown reports an unknown outcome (the command may
// have been applied).
func jsonError(st *status.Status) (body JSONError, unknown bool) {
	body = JSONError{Code: codeNames[st.Code()], Message: st.Message()}
	if body.Code == "" {
		body.Code = "unknown"
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != ErrorDomain {
			continue
		}
		// The outcome field speaks api/outcome's dialect, like the trailer.
		if a, known := outcome.OfReason(info.GetReason()); known && a != outcome.AppliedYes {
			body.Outcome, unknown = a.String(), a == outcome.Unknown
		}
	}
	return body, unknown
}

// codeNames are the snake_case names of the gRPC codes used in JSONError.
var codeNames = map[codes.Code]string{
	codes.OK: "ok", codes.Canceled: "canceled", codes.Unknown: "unknown",
	codes.InvalidArgument: "invalid_argument", codes.DeadlineExceeded: "deadline_exceeded",
	codes.NotFound: "not_found", codes.AlreadyExists: "already_exists",
	codes.PermissionDenied: "permission_denied", codes.ResourceExhausted: "resource_exhausted",
	codes.FailedPrecondition: "failed_precondition", codes.Aborted: "aborted",
	codes.OutOfRange: "out_of_range", codes.Unimplemented: "unimplemented",
	codes.Internal: "internal", codes.Unavailable: "unavailable", codes.DataLoss: "data_loss",
	codes.Unauthenticated: "unauthenticated",
}

func writeHTTPError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code := HTTPStatus(st.Code())
	if errors.Is(err, errBodyTooLarge) {
		code = http.StatusRequestEntityTooLarge
	}
	body, unknown := jsonError(st)
	if unknown {
		w.Header().Set(OutcomeTrailer, OutcomeUnknown)
	}
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		secs := "1"
		if d, ok := retryAfter(st); ok {
			// HTTP has only whole seconds; the exact wait is in the
			// body's message and in retry-after-ms.
			secs = strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10)
			w.Header().Set(RetryAfterMsTrailer, strconv.FormatInt(max(1, d.Milliseconds()), 10))
		}
		w.Header().Set("Retry-After", secs)
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rhizon"`)
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		fmt.Fprintf(&buf, `{"code":"internal","message":%q}`+"\n", "encode response: "+err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// HTTPLimits bounds what one HTTP client may hold of the server, so slow
// or idle connections (slowloris) cannot pile up.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's header.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds a response. GET /v1/watch replaces it with a
	// deadline per event written (watchWriteTimeout), as a watch is meant
	// to last.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header.
	MaxHeaderBytes int
}

// DefaultHTTPLimits returns the limits a node's HTTP port runs with. A
// request body is bounded separately by MaxHTTPBodyBytes.
func DefaultHTTPLimits() HTTPLimits {
	return HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// NewHTTPServer returns an http.Server for h with limits (zero fields take
// DefaultHTTPLimits' values).
func NewHTTPServer(h http.Handler, l HTTPLimits) *http.Server {
	d := DefaultHTTPLimits()
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&l.ReadHeaderTimeout, d.ReadHeaderTimeout}, {&l.ReadTimeout, d.ReadTimeout},
		{&l.WriteTimeout, d.WriteTimeout}, {&l.IdleTimeout, d.IdleTimeout},
	} {
		if *f.v <= 0 {
			*f.v = f.def
		}
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}
