package engine_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
)

// versioned emits one "set" event with the schema version its command asks
// for (verbs v0, v1, v2).
func versioned() actor.Behavior {
	emit := func(v uint32) actor.Handler[struct{}] {
		return func(*actor.Context, *struct{}, *actor.Command) ([]actor.NewEvent, error) {
			return []actor.NewEvent{{Name: "set", Payload: []byte(`{}`), SchemaVersion: v}}, nil
		}
	}
	return actor.Define(actor.Definition[struct{}]{
		Name:     "doc",
		Commands: map[string]actor.Handler[struct{}]{"v0": emit(0), "v1": emit(1), "v2": emit(2)},
		Apply:    func(*struct{}, *actor.Event) error { return nil },
	})
}

// An event's schema version is stored with it; version 1, declared or not,
// is stored as the absent field, so its bytes (and the state hash) are those
// of an event recorded before schema versions existed.
func TestEngine_StoresTheDeclaredSchemaVersion(t *testing.T) {
	reg, err := actor.NewRegistry(versioned())
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string][]byte{}
	hashes := map[string][32]byte{}
	for _, verb := range []string{"v0", "v1", "v2"} {
		r := newReplica(t, reg)
		a := addr("doc", "d1")
		res := r.apply(engine.Entry{Index: 1, At: 1_700_000_000_000, Commands: []actor.Command{cmd(a, verb, "k", nil)}})
		if res[0].Status != actor.StatusAccepted {
			t.Fatalf("%s: %+v", verb, res[0])
		}
		h := r.history(a, false)
		if len(h) != 1 {
			t.Fatalf("%s: %d history records", verb, len(h))
		}
		var ev recordv1.Event
		if err := proto.Unmarshal(h[0].Data, &ev); err != nil {
			t.Fatal(err)
		}
		want := map[string]uint32{"v0": 0, "v1": 0, "v2": 2}[verb]
		if ev.GetSchemaVersion() != want || res[0].Events[0].SchemaVersion != want {
			t.Errorf("%s: stored schema_version %d, result's %d; want %d", verb, ev.GetSchemaVersion(), res[0].Events[0].SchemaVersion, want)
		}
		stored[verb], hashes[verb] = h[0].Data, r.eng.Meta().Hash
		r.close()
	}
	if !bytes.Equal(stored["v0"], stored["v1"]) || hashes["v0"] != hashes["v1"] {
		t.Error("a declared version 1 is stored unlike an undeclared one")
	}
	if hashes["v0"] == hashes["v2"] {
		t.Error("version 2 leaves the state hash of version 1")
	}
}
