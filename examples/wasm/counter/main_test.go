package main

import (
	"testing"

	"github.com/rhizon/rhizon/actor/wasm/sdk"
)

// The module's functions run natively too (the counter uses no Context):
// actor/wasm's tests run the built module against the native counter.
func TestDecideEvolve(t *testing.T) {
	a := sdk.Registered()
	evs, err := a.Decide(nil, []byte(`{"value":4}`), "cmd.counter.add", []byte(`{"amount":-6}`))
	if err != nil || len(evs) != 1 || evs[0].Name != "added" || string(evs[0].Payload) != `{"amount":-6,"value":-2}` {
		t.Fatalf("decide: %v %+v", err, evs)
	}
	state, err := a.Evolve([]byte(`{"value":4}`), "evt.counter.added", evs[0].Payload)
	if err != nil || string(state) != `{"value":-2}` {
		t.Fatalf("evolve: %v %s", err, state)
	}
	if _, err := a.Decide(nil, nil, "cmd.counter.add", []byte(`{"amount":0}`)); err == nil {
		t.Fatal("amount 0 accepted")
	} else if r, ok := err.(*sdk.Rejection); !ok || !r.Invalid {
		t.Fatalf("amount 0: %v", err)
	}
}
