package gateway

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"
)

// TestSpansAndTraceContext checks that every RPC gets a server span (the
// otelgrpc handler from ServerOptions, and the HTTP layer's own) and that the
// command records the server span as its parent, inside the caller's trace.
func TestSpansAndTraceContext(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(prev); _ = tp.Shutdown(context.Background()) })

	h := newHarness(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(withToken(context.Background(), tokAlice), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := h.gw.Submit(ctx, counterReq("c1", "k1", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	if code, resp := httpCall(t, h, "GET", "/v1/status", tokAlice, ""); code != 200 {
		t.Fatalf("status %d %s", code, resp)
	}

	var grpcSpan, httpSpan sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case "rhizon.v1.Gateway/Submit":
			grpcSpan = s
		case "GET /v1/status":
			httpSpan = s
		}
	}
	if grpcSpan == nil || httpSpan == nil {
		names := []string{}
		for _, s := range rec.Ended() {
			names = append(names, s.Name())
		}
		t.Fatalf("spans %v: want the Submit RPC and the HTTP status call", names)
	}
	if got := grpcSpan.SpanContext().TraceID().String(); got != traceID {
		t.Fatalf("server span in trace %s, want the caller's %s", got, traceID)
	}
	cmd := h.be.commands()[0]
	want := "00-" + traceID + "-" + grpcSpan.SpanContext().SpanID().String() + "-01"
	if !strings.EqualFold(cmd.TraceParent, want) {
		t.Fatalf("command traceparent %q, want the server span %q", cmd.TraceParent, want)
	}
}
