package wasm_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/wasm"
	"github.com/rhizon/rhizon/engine"
)

func profileModules(tb testing.TB) (v1, v2 []byte) {
	return buildModule(tb, "./testdata/profile1"), buildModule(tb, "./testdata/profile2")
}

// TestUpcast_VersionedEventsAndModuleUpcaster: revision 1 of a WASM type
// records "named" at schema version 1 (absent when stored); revision 2,
// switched to by the entry, reads the state revision 1 wrote and records
// version 2 (emit_versioned); its rhizon_upcast turns the version-1 event
// into version 2, the same on every call. Revision 1 (an SDK module without
// sdk.Upcast) and revision 2 with its export renamed leave events as they
// are.
func TestUpcast_VersionedEventsAndModuleUpcaster(t *testing.T) {
	m1, m2 := profileModules(t)
	b1, b2 := loadRev(t, "profile", "1", m1), loadRev(t, "profile", "2", m2)
	reg := registry(t)
	for _, b := range []actor.Behavior{b1, b2} {
		if err := reg.AddRevision(b); err != nil {
			t.Fatal(err)
		}
	}
	r := newReplica(t, reg, true)
	res := r.apply(t, engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd("profile", "p1", "name", `{"name":"Ada Lovelace"}`, 1)}})
	if len(res[0].Events) != 1 {
		t.Fatalf("revision 1: %+v", res[0])
	}
	old := res[0].Events[0]
	if old.SchemaVersion != 0 || string(old.Payload) != `{"name":"Ada Lovelace"}` {
		t.Fatalf("revision 1 recorded %+v; want schema version 1 (stored as 0)", old)
	}
	res = r.apply(t, engine.Entry{Index: 2, At: 1001, Revisions: map[string]string{"profile": "2"}, Commands: []actor.Command{
		cmd("profile", "p1", "split", `{"last":"Byron"}`, 2)}})
	if len(res[0].Events) != 1 {
		t.Fatalf("revision 2: %+v", res[0])
	}
	if ev := res[0].Events[0]; ev.SchemaVersion != 2 || string(ev.Payload) != `{"first":"Ada","last":"Byron"}` {
		t.Fatalf("revision 2 recorded %s v%d %s; want v2 {\"first\":\"Ada\",\"last\":\"Byron\"}", ev.Type, ev.SchemaVersion, ev.Payload)
	}

	for range 2 { // from the snapshot each time: the same answer
		up, err := actor.UpcastEvent(b2, old)
		if err != nil || up.Type != "evt.profile.named" || up.SchemaVersion != 2 || string(up.Payload) != `{"first":"Ada","last":"Lovelace"}` {
			t.Fatalf("upcast by revision 2: %s v%d %s (%v)", up.Type, up.SchemaVersion, up.Payload, err)
		}
	}
	// A current event is left alone (the upcaster answers it unchanged).
	if up, err := actor.UpcastEvent(b2, res[0].Events[0]); err != nil || up.SchemaVersion != 2 || string(up.Payload) != `{"first":"Ada","last":"Byron"}` {
		t.Fatalf("upcast of a current event: %+v (%v)", up, err)
	}
	renamed := loadRev(t, "profile", "2", bytes.ReplaceAll(m2, []byte("rhizon_upcast"), []byte("rhizon_upcasX")))
	for name, b := range map[string]*wasm.Behavior{"revision 1 (no sdk.Upcast)": b1, "revision 2 without the export": renamed} {
		for range 2 {
			up, err := actor.UpcastEvent(b, old)
			if err != nil || up.SchemaVersion != 1 || string(up.Payload) != `{"name":"Ada Lovelace"}` {
				t.Fatalf("%s: %s v%d %s (%v); want the event as stored, v1", name, up.Type, up.SchemaVersion, up.Payload, err)
			}
		}
	}
}

// TestUpcast_TrapAndBudgetAreErrors: an upcaster that panics, or loops past
// the fuel budget, is an error naming the cause (the gateway answers
// Internal), and the next upcast works.
func TestUpcast_TrapAndBudgetAreErrors(t *testing.T) {
	_, m2 := profileModules(t)
	b := loadRevCfg(t, "profile", "2", m2, wasm.Config{Fuel: 20_000_000})
	ev := func(name string) actor.Event {
		return actor.Event{Type: "evt.profile.named", Payload: []byte(`{"name":"` + name + `"}`), Address: addr("profile", "p")}
	}
	for name, want := range map[string]string{
		"panic now": "upcaster cannot read panic now",
		"spin away": "more than its fuel budget of 20000000",
	} {
		_, err := actor.UpcastEvent(b, ev(name))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "evt.profile.named v1") {
			t.Errorf("upcast of %q: %v; want an error with %q", name, err, want)
		}
		if up, err := actor.UpcastEvent(b, ev("Grace Hopper")); err != nil || string(up.Payload) != `{"first":"Grace","last":"Hopper"}` {
			t.Fatalf("upcast after %q: %s (%v)", name, up.Payload, err)
		}
	}
}
