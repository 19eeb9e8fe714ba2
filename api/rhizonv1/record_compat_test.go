package rhizonv1_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

var deterministic = proto.MarshalOptions{Deterministic: true}

// Every record message has the same fields (number, name, kind, cardinality,
// presence) as the API message of the same name: stored bytes predate the
// split, and clients decode published events as rhizonv1.Event. The log
// entry is not among them: it is the replicas' own, and the API no longer
// declares one.
func TestRecordMessagesMatchTheAPIOnTheWire(t *testing.T) {
	pairs := []struct{ rec, api proto.Message }{
		{&recordv1.Position{}, &pb.Position{}},
		{&recordv1.Command{}, &pb.Command{}},
		{&recordv1.Event{}, &pb.Event{}},
		{&recordv1.Result{}, &pb.Result{}},
		{&recordv1.Rejection{}, &pb.Rejection{}},
	}
	for _, p := range pairs {
		sameMessage(t, p.rec.ProtoReflect().Descriptor(), p.api.ProtoReflect().Descriptor())
	}
}

func sameMessage(t *testing.T, rec, api protoreflect.MessageDescriptor) {
	t.Helper()
	if rec.Name() != api.Name() || rec.Fields().Len() != api.Fields().Len() {
		t.Errorf("%s has %d fields, %s has %d", rec.FullName(), rec.Fields().Len(), api.FullName(), api.Fields().Len())
		return
	}
	for i := range rec.Fields().Len() {
		rf := rec.Fields().Get(i)
		af := api.Fields().ByNumber(rf.Number())
		if af == nil || af.Name() != rf.Name() || af.Kind() != rf.Kind() ||
			af.Cardinality() != rf.Cardinality() || af.HasPresence() != rf.HasPresence() {
			t.Errorf("%s: field %d (%s) differs from %s's", rec.FullName(), rf.Number(), rf.Name(), api.FullName())
			continue
		}
		switch rf.Kind() {
		case protoreflect.MessageKind:
			sameMessage(t, rf.Message(), af.Message())
		case protoreflect.EnumKind:
			sameEnum(t, rf.Enum(), af.Enum())
		}
	}
}

func sameEnum(t *testing.T, rec, api protoreflect.EnumDescriptor) {
	t.Helper()
	if rec.Values().Len() != api.Values().Len() {
		t.Errorf("enum %s has %d values, %s has %d", rec.FullName(), rec.Values().Len(), api.FullName(), api.Values().Len())
	}
	for i := range rec.Values().Len() {
		rv := rec.Values().Get(i)
		if av := api.Values().ByNumber(rv.Number()); av == nil || av.Name() != rv.Name() {
			t.Errorf("enum %s: value %d (%s) differs from %s's", rec.FullName(), rv.Number(), rv.Name(), api.FullName())
		}
	}
}

// roundTrip checks that a record decodes as the API message with the same
// fields (none left unknown) and encodes to the same bytes.
func roundTrip(t *testing.T, name string, rec, fromActor, into proto.Message) {
	t.Helper()
	b, err := deterministic.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: decode as the API message: %v", name, err)
	}
	if !proto.Equal(into, fromActor) || len(into.ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("%s decoded as the API message:\n got %v\nwant %v", name, into, fromActor)
	}
	if a, _ := deterministic.Marshal(into); !bytes.Equal(a, b) {
		t.Errorf("%s: API re-encoding %x != record %x", name, a, b)
	}
}

func TestRecordBytesDecodeAsTheAPIMessages(t *testing.T) {
	v := uint64(4)
	addr := actor.Address{Tenant: "t", Workspace: "w", ActorType: "kv", EntityID: "e"}
	who := actor.Principal{ID: "alice", Type: actor.PrincipalUser}
	ev := actor.Event{ID: "ev1", Type: "evt.kv.patched", Address: addr, Version: 5, Payload: []byte(`{"a":1}`),
		At: -3, CommandID: "c1", CausationID: "ca", CorrelationID: "co", TraceParent: "tp",
		Principal: who, Shard: 9, Index: 77, Ordinal: 2}
	res := actor.Result{CommandID: "c1", Status: actor.StatusRejected, Reason: actor.ReasonBusiness,
		Code: "exists", Message: "m", Version: 5, Index: 77, Duplicate: true, Replay: true,
		Reply: []byte("r"), Events: []actor.Event{ev, ev}}
	cmd := actor.Command{ID: "c1", Type: "cmd.kv.patch", Address: addr, Payload: []byte("{}"),
		IdempotencyKey: "k", ExpectedVersion: &v, CausationID: "ca", CorrelationID: "co",
		TraceParent: "tp", TraceState: "ts",
		Security: actor.Security{Principal: who, Scopes: []actor.Scope{{Tenant: "t", Workspace: "*"}, {Tenant: "u", Workspace: "w"}}}}

	roundTrip(t, "event", recordv1.FromEvent(&ev), pb.FromEvent(&ev), &pb.Event{})
	roundTrip(t, "result", recordv1.FromResult(&res), pb.FromResult(&res), &pb.Result{})
	roundTrip(t, "command", recordv1.FromCommand(&cmd), pb.FromCommand(&cmd), &pb.Command{})
	roundTrip(t, "rejection",
		&recordv1.Rejection{Type: "evt.kv.rejected", CommandId: "c1", CommandType: "cmd.kv.patch", Address: recordv1.FromAddress(addr),
			Reason: recordv1.Reason_REASON_CONFLICT, Code: "version_conflict", Message: "m", At: 5, Principal: recordv1.FromPrincipal(who),
			IdempotencyKey: "k", ExpectedVersion: &v, ActualVersion: 6, CausationId: "ca", CorrelationId: "co", Traceparent: "tp",
			Shard: 9, Index: 77, Ordinal: 3},
		&pb.Rejection{Type: "evt.kv.rejected", CommandId: "c1", CommandType: "cmd.kv.patch", Address: pb.FromAddress(addr),
			Reason: pb.Reason_REASON_CONFLICT, Code: "version_conflict", Message: "m", At: 5, Principal: pb.FromPrincipal(who),
			IdempotencyKey: "k", ExpectedVersion: &v, ActualVersion: 6, CausationId: "ca", CorrelationId: "co", Traceparent: "tp",
			Shard: 9, Index: 77, Ordinal: 3},
		&pb.Rejection{})
}
