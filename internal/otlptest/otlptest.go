// Package otlptest is a real OTLP receiver for tests: it serves the OTLP
// trace and metrics services over gRPC and over HTTP (protobuf) on
// 127.0.0.1, and keeps what it received, so a test can check the spans and
// metrics a process exported.
package otlptest

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Span is one received span with its resource's attributes.
type Span struct {
	TraceID, SpanID, ParentID string // hex; ParentID "" for a root
	Name                      string
	Kind                      tracepb.Span_SpanKind
	Attrs                     map[string]string // values as text
	Resource                  map[string]string
	Links                     []Link
}

// Link is a span link (trace and span id, hex).
type Link struct{ TraceID, SpanID string }

// Receiver collects what exporters send it.
type Receiver struct {
	// GRPCAddr (host:port) and HTTPURL (http[s]://host:port) are where the
	// exporters send.
	GRPCAddr, HTTPURL string

	mu      sync.Mutex
	spans   []Span
	metrics []string            // metric names, in arrival order
	headers map[string][]string // request headers/metadata seen, lower-case keys
}

type traceSvc struct {
	colltrace.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traceSvc) Export(ctx context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.r.addTraces(req, md)
	return &colltrace.ExportTraceServiceResponse{}, nil
}

type metricSvc struct {
	collmetrics.UnimplementedMetricsServiceServer
	r *Receiver
}

func (s metricSvc) Export(ctx context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.r.addMetrics(req, md)
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

// Start serves a receiver until t ends. With tlsConf the gRPC and HTTP
// listeners serve TLS.
func Start(t testing.TB, tlsConf *tls.Config) *Receiver {
	t.Helper()
	r := &Receiver{headers: map[string][]string{}}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var gopts []grpc.ServerOption
	if tlsConf != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tlsConf)))
	}
	gs := grpc.NewServer(gopts...)
	colltrace.RegisterTraceServiceServer(gs, traceSvc{r: r})
	collmetrics.RegisterMetricsServiceServer(gs, metricSvc{r: r})
	go func() { _ = gs.Serve(gl) }()
	r.GRPCAddr = gl.Addr().String()

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, q *http.Request) {
		var req colltrace.ExportTraceServiceRequest
		if !decodeHTTP(w, q, &req) {
			return
		}
		r.addTraces(&req, lower(q.Header))
		writeHTTP(w, &colltrace.ExportTraceServiceResponse{})
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, q *http.Request) {
		var req collmetrics.ExportMetricsServiceRequest
		if !decodeHTTP(w, q, &req) {
			return
		}
		r.addMetrics(&req, lower(q.Header))
		writeHTTP(w, &collmetrics.ExportMetricsServiceResponse{})
	})
	hs := &http.Server{Handler: mux, TLSConfig: tlsConf}
	scheme := "http://"
	if tlsConf != nil {
		scheme = "https://"
		go func() { _ = hs.ServeTLS(hl, "", "") }()
	} else {
		go func() { _ = hs.Serve(hl) }()
	}
	r.HTTPURL = scheme + hl.Addr().String()
	t.Cleanup(func() {
		gs.Stop()
		_ = hs.Close()
	})
	return r
}

// lower turns HTTP headers into gRPC-style metadata (lower-case keys).
func lower(h http.Header) map[string][]string {
	md := metadata.MD{}
	for k, v := range h {
		md.Append(k, v...)
	}
	return md
}

func decodeHTTP(w http.ResponseWriter, q *http.Request, m proto.Message) bool {
	body, err := io.ReadAll(q.Body)
	if err == nil {
		err = proto.Unmarshal(body, m)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func writeHTTP(w http.ResponseWriter, m proto.Message) {
	b, _ := proto.Marshal(m)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

func attrs(kvs []*common.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[kv.Key] = value(kv.Value)
	}
	return out
}

func value(v *common.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *common.AnyValue_StringValue:
		return x.StringValue
	case *common.AnyValue_BoolValue:
		if x.BoolValue {
			return "true"
		}
		return "false"
	case *common.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	default:
		return v.String()
	}
}

func (r *Receiver) seen(md map[string][]string) {
	for k, v := range md {
		r.headers[k] = v
	}
}

func (r *Receiver) addTraces(req *colltrace.ExportTraceServiceRequest, md map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen(md)
	for _, rs := range req.ResourceSpans {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				s := Span{
					TraceID: hex.EncodeToString(sp.TraceId), SpanID: hex.EncodeToString(sp.SpanId),
					ParentID: hex.EncodeToString(sp.ParentSpanId), Name: sp.Name, Kind: sp.Kind,
					Attrs: attrs(sp.Attributes), Resource: res,
				}
				for _, l := range sp.Links {
					s.Links = append(s.Links, Link{TraceID: hex.EncodeToString(l.TraceId), SpanID: hex.EncodeToString(l.SpanId)})
				}
				r.spans = append(r.spans, s)
			}
		}
	}
}

func (r *Receiver) addMetrics(req *collmetrics.ExportMetricsServiceRequest, md map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen(md)
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				r.metrics = append(r.metrics, m.Name)
			}
		}
	}
}

// Spans returns a copy of the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Metrics returns the names of the metrics received so far (repeats kept).
func (r *Receiver) Metrics() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.metrics...)
}

// Header returns the first value of a request header or gRPC metadata key
// seen on any export (key in lower case).
func (r *Receiver) Header(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := metadata.MD(r.headers).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
