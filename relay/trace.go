package relay

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/rhizon/rhizon/internal/tracectx"
)

var tracer = otel.Tracer("github.com/rhizon/rhizon/relay")

// trace puts the message into the trace of the command that produced it.
// When that trace is sampled, a "relay.publish" producer span (child of the
// command's traceparent) covers the publication, ended by endSpans; the
// message's traceparent header then names that span, so a consumer
// continues under it. Otherwise the header carries the command's
// traceparent as it is (no span: most traces are not sampled, and the relay
// publishes every event of the shard).
func (r *Relay) trace(om *outMsg, traceparent, kind string) {
	parent := tracectx.Parse(traceparent)
	if !parent.IsValid() {
		return
	}
	if !parent.IsSampled() {
		om.msg.Header.Set(tracectx.Header, traceparent)
		return
	}
	_, sp := tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "relay.publish",
		trace.WithSpanKind(trace.SpanKindProducer))
	if sp.IsRecording() {
		sp.SetAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", om.msg.Subject),
			attribute.String("messaging.message.id", om.id), attribute.String("rhizon.outbox.kind", kind),
			tracectx.KeyShard.Int64(int64(r.src.ID())))
	}
	om.span = sp
	om.msg.Header.Set(tracectx.Header, tracectx.Format(sp.SpanContext()))
}

// endSpans ends the publication spans of msgs, as failed when err is set.
func endSpans(msgs []outMsg, err error) {
	for _, om := range msgs {
		if om.span == nil {
			continue
		}
		if err != nil {
			om.span.SetStatus(codes.Error, err.Error())
		}
		om.span.End()
	}
}
