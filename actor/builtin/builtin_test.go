package builtin

import (
	"bytes"
	"slices"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

func TestAllAndRegistry(t *testing.T) {
	want := map[string][]string{
		AccountType:   {"deposit", "open", "withdraw"},
		CounterType:   {"add"},
		KVType:        {"create", "delete", "get", "patch", "update"},
		LockType:      {"acquire", "refresh", "release", "timer"},
		InventoryType: {"commit", "release", "reserve", "stock"},
		OrderType:     {"charge_declined", "charged", "place", "released", "reservation_failed", "reserved"},
		PaymentType:   {"charge", "deposit"},
	}
	var types []string
	for _, b := range All() {
		types = append(types, b.Type())
		if got := b.Verbs(); !slices.Equal(got, want[b.Type()]) {
			t.Errorf("%s verbs %v, want %v", b.Type(), got, want[b.Type()])
		}
		if _, ok := b.(actor.Validator); !ok {
			t.Errorf("%s is not an actor.Validator", b.Type())
		}
		if v, ok := b.(actor.Versioned); !ok || v.Version() != "2" {
			t.Errorf("%s: version %v", b.Type(), b)
		}
	}
	if !slices.IsSorted(types) || len(types) != len(want) {
		t.Errorf("All() types %v", types)
	}
	r := Registry()
	if !slices.Equal(r.Types(), types) {
		t.Errorf("Registry().Types() = %v, want %v", r.Types(), types)
	}
	for _, ty := range types {
		if b, ok := r.Lookup(ty); !ok || b.Type() != ty {
			t.Errorf("Lookup(%q) = %v, %v", ty, b, ok)
		}
	}
	// The hard-coded verb lists in the unknown-verb messages match Verbs.
	for ty, verbs := range map[string][]string{ //rhizon:deterministic test only; order does not matter
		AccountType: accountVerbs, CounterType: counterVerbs, KVType: kvVerbs, LockType: lockVerbs,
		InventoryType: inventoryVerbs, OrderType: orderVerbs, PaymentType: paymentVerbs,
	} {
		if !slices.Equal(verbs, want[ty]) {
			t.Errorf("%s verb list %v, want %v", ty, verbs, want[ty])
		}
	}
}

func TestEvolveRefusesUnknownEvents(t *testing.T) {
	for _, b := range All() {
		ev := &actor.Event{Type: actor.EventType(b.Type(), "bogus"), Payload: []byte(`{}`)}
		if _, err := b.Evolve(nil, ev); err == nil {
			t.Errorf("%s: Evolve accepted %s", b.Type(), ev.Type)
		}
		// Another type's event with a known name is refused too.
		ev = &actor.Event{Type: actor.EventType("other", "added"), Payload: []byte(`{}`)}
		if _, err := b.Evolve(nil, ev); err == nil {
			t.Errorf("%s: Evolve accepted %s", b.Type(), ev.Type)
		}
	}
}

func TestEvolveRefusesMalformedEvents(t *testing.T) {
	for _, tc := range []struct {
		b    actor.Behavior
		name string
	}{
		{Counter(), "added"}, {Account(), "opened"}, {Account(), "deposited"},
		{KV(), "created"}, {KV(), "patched"}, {Lock(), "acquired"}, {Lock(), "released"},
	} {
		for _, p := range []string{``, `[`, `{"x":`, `"s"`} {
			ev := &actor.Event{Type: actor.EventType(tc.b.Type(), tc.name), Payload: []byte(p)}
			if s, err := tc.b.Evolve(nil, ev); err == nil {
				t.Errorf("%s %s: Evolve accepted payload %q, state %s", tc.b.Type(), tc.name, p, s)
			}
		}
	}
	// A patched event whose patch is not an object cannot be applied.
	ev := &actor.Event{Type: actor.EventType(KVType, "patched"), Payload: []byte(`{"patch":[1]}`)}
	if _, err := KV().Evolve([]byte(`{"exists":true,"doc":{}}`), ev); err == nil {
		t.Error("kv: Evolve applied an array as a merge patch")
	}
}

// script is a command sequence per type that touches every verb.
var scripts = map[string][]struct {
	now           int64
	verb, payload string
}{
	CounterType: {{1, "add", `{"amount":5}`}, {2, "add", `{"amount":-9}`}, {3, "add", `{"amount":0}`}},
	AccountType: {{1, "deposit", `{"amount":5}`}, {2, "open", `{"currency":"EUR"}`}, {3, "deposit", `{"amount":500}`},
		{4, "withdraw", `{"amount":120}`}, {5, "withdraw", `{"amount":1000}`}, {6, "open", ``}},
	KVType: {{1, "create", `{"doc":{"b":{"c":[1,2.50,"x"]},"a":null,"z":1e3}}`}, {2, "patch", `{"patch":{"b":{"d":true,"c":null},"q":"<&>"}}`},
		{3, "get", ``}, {4, "update", `{"doc":{"y":{"x":1}}}`}, {5, "patch", `{"patch":{"y":{"w":[{}]},"v":-0.0}}`},
		{6, "delete", `{}`}, {7, "get", `{}`}, {8, "delete", ``}, {9, "create", `{"doc":{}}`}},
	LockType: {{1000, "acquire", `{"owner":"a","ttl_ms":100}`}, {1050, "refresh", `{"owner":"a","ttl_ms":100}`},
		{1150, "timer", `{"name":"expiry","at":1100}`}, {1150, "acquire", `{"owner":"b","ttl_ms":100}`},
		{1300, "acquire", `{"owner":"a","ttl_ms":5}`}, {1301, "release", `{"owner":"a"}`}, {1400, "timer", `{"name":"expiry","at":1305}`},
		{1401, "release", `{"owner":"a"}`}, {1402, "acquire", `{"owner_id":"c","resource_id":"e1"}`}, {6402, "timer", `{"name":"expiry","at":6402}`}},
}

// run drives a script and records everything observable.
func runScript(t *testing.T, b actor.Behavior) (state []byte, trace [][]byte) {
	e := newEntity(b)
	for _, c := range scripts[b.Type()] {
		out := e.exec(t, c.now, c.verb, c.payload)
		trace = append(trace, []byte(fmtEvents(out.events)), []byte(fmtTimers(out.timers)), out.reply)
		if out.err != nil {
			trace = append(trace, []byte(out.err.Error()))
		}
		trace = append(trace, bytes.Clone(e.state))
	}
	if got := e.replay(t); !bytes.Equal(got, e.state) {
		t.Errorf("%s: replay gives %s, want %s", b.Type(), got, e.state)
	}
	return e.state, trace
}

// The same commands on fresh behaviours give byte-identical events, effects,
// replies, rejections and states.
func TestDeterminism(t *testing.T) {
	for _, mk := range []func() actor.Behavior{Counter, Account, KV, Lock} {
		b1, b2 := mk(), mk()
		t.Run(b1.Type(), func(t *testing.T) {
			for range 20 {
				s1, tr1 := runScript(t, b1)
				s2, tr2 := runScript(t, b2)
				if !bytes.Equal(s1, s2) {
					t.Fatalf("states differ: %s vs %s", s1, s2)
				}
				if len(tr1) != len(tr2) {
					t.Fatalf("traces differ in length")
				}
				for i := range tr1 {
					if !bytes.Equal(tr1[i], tr2[i]) {
						t.Fatalf("trace %d differs: %s vs %s", i, tr1[i], tr2[i])
					}
				}
			}
		})
	}
}
