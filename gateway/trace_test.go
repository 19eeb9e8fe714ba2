package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"

	"github.com/rhizon/rhizon/internal/testkit"
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

	// The server span ends in gRPC's stats handler, which may run after
	// the client has its answer (CI once looked before it ended).
	var grpcSpan, httpSpan sdktrace.ReadOnlySpan
	testkit.Poll{Timeout: 5 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "the Submit RPC's and the HTTP status call's spans ended", func() (bool, string) {
		names := []string{}
		for _, s := range rec.Ended() {
			names = append(names, s.Name())
			switch s.Name() {
			case "rhizon.v1.Gateway/Submit":
				grpcSpan = s
			case "GET /v1/status":
				httpSpan = s
			}
		}
		return grpcSpan != nil && httpSpan != nil, fmt.Sprint(names)
	})
	if got := grpcSpan.SpanContext().TraceID().String(); got != traceID {
		t.Fatalf("server span in trace %s, want the caller's %s", got, traceID)
	}
	cmd := h.be.commands()[0]
	want := "00-" + traceID + "-" + grpcSpan.SpanContext().SpanID().String() + "-01"
	if !strings.EqualFold(cmd.TraceParent, want) {
		t.Fatalf("command traceparent %q, want the server span %q", cmd.TraceParent, want)
	}
}
