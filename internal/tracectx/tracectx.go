// Package tracectx carries a command's trace context across the places
// where no context.Context travels (the Raft log, JetStream messages) and
// names the attributes Rhizon's spans carry.
package tracectx

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/rhizon/rhizon/actor"
)

// Header is the W3C trace-context header, as set on NATS messages.
const Header = "traceparent"

var w3c propagation.TraceContext

// Parse returns the remote span context of a W3C traceparent, or an
// invalid one when tp is empty or malformed (a bad traceparent never fails
// a command: it was validated for length and printability only).
func Parse(tp string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	// The common shape without the propagator's allocations: this runs for
	// every command on every replica.
	if len(tp) == 55 && tp[:3] == "00-" && tp[35] == '-' && tp[52] == '-' {
		tid, err1 := trace.TraceIDFromHex(tp[3:35])
		sid, err2 := trace.SpanIDFromHex(tp[36:52])
		var flags [1]byte
		_, err3 := hex.Decode(flags[:], []byte(tp[53:]))
		if err1 == nil && err2 == nil && err3 == nil {
			return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid,
				TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled, Remote: true})
		}
		return trace.SpanContext{}
	}
	ctx := w3c.Extract(context.Background(), propagation.MapCarrier{Header: tp})
	return trace.SpanContextFromContext(ctx)
}

// Format renders sc as a W3C traceparent ("" when sc is invalid).
func Format(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
	return c[Header]
}

// FromNATS returns the traceparent of a NATS message's headers. NATS
// headers are case-sensitive; producers write either spelling.
func FromNATS(h map[string][]string) string {
	for _, k := range [...]string{Header, "Traceparent"} {
		if v := h[k]; len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return ""
}

// Attribute keys of Rhizon's spans.
const (
	KeyCommandType    = attribute.Key("rhizon.command.type")
	KeyCommandID      = attribute.Key("rhizon.command.id")
	KeyTenant         = attribute.Key("rhizon.tenant")
	KeyWorkspace      = attribute.Key("rhizon.workspace")
	KeyActorType      = attribute.Key("rhizon.actor_type")
	KeyEntityID       = attribute.Key("rhizon.entity_id")
	KeyIdempotencyHit = attribute.Key("rhizon.idempotency.hit")
	KeyStatus         = attribute.Key("rhizon.result.status")
	KeyReason         = attribute.Key("rhizon.result.reason")
	KeyCode           = attribute.Key("rhizon.result.code")
	KeyConflict       = attribute.Key("rhizon.conflict")
	KeyViolation      = attribute.Key("rhizon.violation")
	KeyVersion        = attribute.Key("rhizon.entity.version")
	KeyShard          = attribute.Key("rhizon.shard")
)

// Command is the attributes of a command: its type, id and address.
func Command(c *actor.Command) []attribute.KeyValue {
	return []attribute.KeyValue{
		KeyCommandType.String(c.Type), KeyCommandID.String(c.ID),
		KeyTenant.String(c.Address.Tenant), KeyWorkspace.String(c.Address.Workspace),
		KeyActorType.String(c.Address.ActorType), KeyEntityID.String(c.Address.EntityID),
	}
}

// Result is the attributes of a command's outcome. The code is the actor's
// code of a business rejection, else the status or reason.
func Result(r *actor.Result) []attribute.KeyValue {
	status, code := "accepted", "accepted"
	if r.Status == actor.StatusRejected {
		status, code = "rejected", r.Reason.String()
		if r.Code != "" {
			code = r.Code
		}
	}
	return []attribute.KeyValue{
		KeyStatus.String(status), KeyReason.String(r.Reason.String()), KeyCode.String(code),
		KeyIdempotencyHit.Bool(r.Duplicate || r.Replay),
		KeyConflict.Bool(r.Reason == actor.ReasonConflict), KeyViolation.Bool(r.Reason == actor.ReasonViolation),
		KeyVersion.Int64(int64(r.Version)),
	}
}
