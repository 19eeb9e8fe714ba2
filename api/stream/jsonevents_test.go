package stream

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

func TestJSONEventSubject_MapsToTheSeedShape(t *testing.T) {
	for _, tc := range []struct {
		addr actor.Address
		typ  string
		want string
	}{
		{actor.Address{Tenant: "acme", Workspace: "main", ActorType: "kv", EntityID: "d1"}, "evt.kv.created", "evt.acme.main.kv.created"},
		// Dots in any part stay inside their token.
		{actor.Address{Tenant: "a.b", Workspace: "w", ActorType: "doc.v2", EntityID: "x.y"}, "evt.doc.v2.re.named", "evt.a%2Eb.w.doc%2Ev2.re%2Enamed"},
		// A type of another shape is the name whole.
		{actor.Address{Tenant: "t", Workspace: "w", ActorType: "kv", EntityID: "e"}, "evt.security.violation", "evt.t.w.kv.evt%2Esecurity%2Eviolation"},
	} {
		if got := JSONEventSubject(tc.addr, tc.typ); got != tc.want {
			t.Errorf("JSONEventSubject(%v, %q) = %q, want %q", tc.addr, tc.typ, got, tc.want)
		}
	}
	if got := JSONEventFilter("acme", "main", ""); got != "evt.acme.main.*.*" {
		t.Errorf("JSONEventFilter = %q", got)
	}
}

func TestEventEnvelope_CarriesTheEventAndRoundTrips(t *testing.T) {
	ev := actor.Event{
		ID: "e1", Type: "evt.kv.created", Address: actor.Address{Tenant: "t", Workspace: "w", ActorType: "kv", EntityID: "d"},
		Version: 3, Payload: []byte(`{"doc":{"a":1}}`), At: 1_700_000_000_000, CommandID: "c1", CausationID: "ca", CorrelationID: "co",
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Principal:   actor.Principal{ID: "alice", Type: actor.PrincipalUser}, Shard: 2, Index: 40, Ordinal: 1,
	}
	body, err := json.Marshal(NewEnvelope(&ev))
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"message_id": "e1", "tenant": "t", "workspace": "w", "actor_type": "kv", "entity_id": "d",
		"event_type": "evt.kv.created", "name": "created", "schema_version": 1.0, "version": 3.0,
		"timestamp": 1.7e12, "command_id": "c1", "causation_id": "ca", "correlation_id": "co",
		"position":  map[string]any{"shard": 2.0, "index": 40.0, "ordinal": 1.0},
		"principal": map[string]any{"id": "alice", "type": "user"},
		"payload":   map[string]any{"doc": map[string]any{"a": 1.0}},
	} {
		if !reflect.DeepEqual(fields[k], want) {
			t.Errorf("%s = %v, want %v (%s)", k, fields[k], want, body)
		}
	}
	var back EventEnvelope
	if err := json.Unmarshal(body, &back); err != nil {
		t.Fatal(err)
	}
	got := back.ToActor()
	ev.SchemaVersion = 1 // shown, never 0
	if !reflect.DeepEqual(got, ev) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, ev)
	}

	// A payload that is not JSON travels base64-encoded.
	ev.Payload, ev.SchemaVersion = []byte{0xff, 0x00, 'x'}, 7
	body, _ = json.Marshal(NewEnvelope(&ev))
	fields = nil
	if err := json.Unmarshal(body, &fields); err != nil || fields["payload"] != nil || fields["payload_base64"] != "/wB4" || fields["schema_version"] != 7.0 {
		t.Errorf("binary payload: %s (%v)", body, err)
	}
	back = EventEnvelope{}
	_ = json.Unmarshal(body, &back)
	if got := back.ToActor(); string(got.Payload) != string(ev.Payload) || got.SchemaVersion != 7 {
		t.Errorf("binary payload round trip: %+v", got)
	}
}
