package stream

import (
	"encoding/json"
	"strings"

	"github.com/rhizon/rhizon/actor"
)

// Event formats: what the outbox relay publishes for each event (the node's
// --events-format). Rejections are published as protobuf on
// RejectionSubject in every format.
const (
	// FormatProtobuf: a rhizon.v1.Event on EventSubject (the default, and
	// what Watch and the Go client read).
	FormatProtobuf = "protobuf"
	// FormatJSON: an EventEnvelope on JSONEventSubject only.
	FormatJSON = "json"
	// FormatBoth: both, so each subscriber picks its format by subject.
	FormatBoth = "both"
)

// JSONEventsPrefix is the prefix of the JSON events' subjects: the subject
// shape of the original runtime, evt.<tenant>.<workspace>.<domain>.<name>.
const JSONEventsPrefix = "evt."

// JSONMsgIDPrefix marks the message id of an event's JSON copy in
// FormatBoth: the protobuf copy keeps the event id, and one stream cannot
// hold two messages of one id. In FormatJSON the JSON message's id is the
// event id itself.
const JSONMsgIDPrefix = "json/"

// JSONEventSubject is the subject of an event in JSON:
// evt.<tenant>.<workspace>.<actor_type>.<name>, where the event type is
// evt.<actor_type>.<name> (the domain of the original runtime is the actor
// type). Each token is escaped with Token, so a name holding dots stays one
// token. An event type of another shape gives its whole type as the name.
func JSONEventSubject(addr actor.Address, eventType string) string {
	name, ok := strings.CutPrefix(eventType, "evt."+addr.ActorType+".")
	if !ok {
		name = eventType
	}
	return JSONEventsPrefix + Token(addr.Tenant) + "." + Token(addr.Workspace) + "." + Token(addr.ActorType) + "." + Token(name)
}

// JSONEventFilter is the subject filter for JSON events of a tenant and
// workspace, optionally of one actor type. The entity is not in the
// subject: filter on EventEnvelope.EntityID.
func JSONEventFilter(tenant, workspace, actorType string) string {
	at := "*"
	if actorType != "" {
		at = Token(actorType)
	}
	return JSONEventsPrefix + Token(tenant) + "." + Token(workspace) + "." + at + ".*"
}

// EventEnvelope is the JSON body of an event published in FormatJSON or
// FormatBoth. README.md ("JSON events") documents it field by field.
type EventEnvelope struct {
	MessageID     string `json:"message_id"`
	Tenant        string `json:"tenant"`
	Workspace     string `json:"workspace"`
	ActorType     string `json:"actor_type"`
	EntityID      string `json:"entity_id"`
	EventType     string `json:"event_type"`
	Name          string `json:"name"`
	SchemaVersion uint32 `json:"schema_version"`
	Version       uint64 `json:"version"`
	Position      struct {
		Shard   uint32 `json:"shard"`
		Index   uint64 `json:"index"`
		Ordinal uint32 `json:"ordinal"`
	} `json:"position"`
	Timestamp     int64  `json:"timestamp"`
	CommandID     string `json:"command_id"`
	CausationID   string `json:"causation_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Traceparent   string `json:"traceparent,omitempty"`
	Principal     struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"principal"`
	// Payload is the event's payload when it is JSON (the built-in actors'
	// always are); PayloadBase64 holds any other payload, base64-encoded.
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payload_base64,omitempty"`
}

// NewEnvelope is the JSON envelope of ev. Its schema version is at least 1.
func NewEnvelope(ev *actor.Event) EventEnvelope {
	e := EventEnvelope{
		MessageID: ev.ID, Tenant: ev.Address.Tenant, Workspace: ev.Address.Workspace,
		ActorType: ev.Address.ActorType, EntityID: ev.Address.EntityID, EventType: ev.Type,
		SchemaVersion: ev.Schema(), Version: ev.Version, Timestamp: ev.At, CommandID: ev.CommandID,
		CausationID: ev.CausationID, CorrelationID: ev.CorrelationID, Traceparent: ev.TraceParent,
	}
	e.Name = strings.TrimPrefix(ev.Type, "evt."+ev.Address.ActorType+".")
	e.Position.Shard, e.Position.Index, e.Position.Ordinal = ev.Shard, ev.Index, ev.Ordinal
	e.Principal.ID, e.Principal.Type = ev.Principal.ID, string(ev.Principal.Type)
	switch {
	case len(ev.Payload) == 0:
	case json.Valid(ev.Payload):
		e.Payload = json.RawMessage(ev.Payload)
	default:
		e.PayloadBase64 = ev.Payload
	}
	return e
}

// ToActor is the event the envelope carries (its schema version as the
// envelope says, at least 1).
func (e *EventEnvelope) ToActor() actor.Event {
	ev := actor.Event{
		ID: e.MessageID, Type: e.EventType,
		Address: actor.Address{Tenant: e.Tenant, Workspace: e.Workspace, ActorType: e.ActorType, EntityID: e.EntityID},
		Version: e.Version, At: e.Timestamp, CommandID: e.CommandID, CausationID: e.CausationID,
		CorrelationID: e.CorrelationID, TraceParent: e.Traceparent,
		Principal: actor.Principal{ID: e.Principal.ID, Type: actor.PrincipalType(e.Principal.Type)},
		Shard:     e.Position.Shard, Index: e.Position.Index, Ordinal: e.Position.Ordinal,
		SchemaVersion: e.SchemaVersion,
	}
	if len(e.Payload) > 0 {
		ev.Payload = []byte(e.Payload)
	} else {
		ev.Payload = e.PayloadBase64
	}
	return ev
}
