package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// Without an exporter a node records no span of its own, yet keeps every
// span context valid (commands carry it as their traceparent) and honours a
// caller that sampled.
func TestWithoutExporterOnlyCallerSampledSpansRecord(t *testing.T) {
	keepGlobals(t)
	clearOTELEnv(t) // a host's OTEL_* variables would configure an exporter
	tel, err := Setup(context.Background(), Config{ServiceName: "rhizon-test", NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	tr := otel.Tracer("test")

	_, root := tr.Start(context.Background(), "root")
	defer root.End()
	if root.IsRecording() || root.SpanContext().IsSampled() {
		t.Fatal("a root span is recorded with no exporter")
	}
	if !root.SpanContext().IsValid() {
		t.Fatal("an unsampled span has no trace context to propagate")
	}

	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	_, child := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "child")
	defer child.End()
	if !child.IsRecording() || !child.SpanContext().IsSampled() || child.SpanContext().TraceID() != parent.TraceID() {
		t.Fatalf("a caller-sampled span: recording %v, context %v", child.IsRecording(), child.SpanContext())
	}
}
