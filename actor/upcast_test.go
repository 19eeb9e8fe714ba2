package actor_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

func upcasting(up func(string, uint32, []byte) (string, uint32, []byte, error)) actor.Behavior {
	return actor.Define(actor.Definition[struct{}]{
		Name: "doc", Apply: func(*struct{}, *actor.Event) error { return nil }, Upcast: up,
	})
}

func TestUpcastEvent(t *testing.T) {
	// v1 -> v2 -> v3, one step at a time; v3 renames the event.
	chain := upcasting(func(typ string, v uint32, p []byte) (string, uint32, []byte, error) {
		switch v {
		case 1:
			return typ, 2, append(p, '2'), nil
		case 2:
			return "evt.doc.titled", 3, append(p, '3'), nil
		}
		return typ, v, p, nil
	})
	ev := actor.Event{Type: "evt.doc.named", Payload: []byte("p")}
	got, err := actor.UpcastEvent(chain, ev)
	if err != nil || got.Type != "evt.doc.titled" || got.SchemaVersion != 3 || string(got.Payload) != "p23" {
		t.Errorf("chain: %s v%d %s (%v); want evt.doc.titled v3 p23", got.Type, got.SchemaVersion, got.Payload, err)
	}
	if ev.SchemaVersion != 0 || ev.Type != "evt.doc.named" {
		t.Errorf("UpcastEvent changed its argument: %+v", ev)
	}
	// A stored v3 is left alone.
	if got, _ := actor.UpcastEvent(chain, actor.Event{Type: "evt.doc.titled", SchemaVersion: 3, Payload: []byte("q")}); string(got.Payload) != "q" || got.SchemaVersion != 3 {
		t.Errorf("current event changed: %+v", got)
	}
	// Without an upcaster (or a Definition without Upcast), the version is
	// only made explicit.
	plain := actor.Define(actor.Definition[struct{}]{Name: "doc", Apply: func(*struct{}, *actor.Event) error { return nil }})
	if got, err := actor.UpcastEvent(plain, actor.Event{Type: "evt.doc.named"}); err != nil || got.SchemaVersion != 1 {
		t.Errorf("no upcaster: %+v %v", got, err)
	}
	for name, tc := range map[string]struct {
		up   func(string, uint32, []byte) (string, uint32, []byte, error)
		want string
	}{
		"fails": {func(string, uint32, []byte) (string, uint32, []byte, error) {
			return "", 0, nil, errors.New("bad payload")
		}, "bad payload"},
		"lowers": {func(typ string, v uint32, p []byte) (string, uint32, []byte, error) {
			return typ, v - 1, p, nil
		}, "may only raise"},
		"never settles": {func(typ string, v uint32, p []byte) (string, uint32, []byte, error) {
			return typ, v + 1, p, nil
		}, "still changing after 32 steps"},
	} {
		_, err := actor.UpcastEvent(upcasting(tc.up), actor.Event{Type: "evt.doc.named", SchemaVersion: 2})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one with %q", name, err, tc.want)
		}
	}
}

func TestStoredSchemaVersion_OneIsStoredAsAbsent(t *testing.T) {
	for v, want := range map[uint32]uint32{0: 0, 1: 0, 2: 2, 7: 7} {
		if got := actor.StoredSchemaVersion(v); got != want {
			t.Errorf("StoredSchemaVersion(%d) = %d, want %d", v, got, want)
		}
		ev := actor.Event{SchemaVersion: actor.StoredSchemaVersion(v)}
		if got := ev.Schema(); got != max(v, 1) {
			t.Errorf("Schema() of stored %d = %d, want %d", v, got, max(v, 1))
		}
	}
}
