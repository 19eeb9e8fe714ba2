// Command profile2 is revision 2 of the test actor of profile1: "named" is
// now schema version 2, {"first", "last"}, and its upcaster turns version 1
// ({"name": "First Last"}) into it. A version-1 name starting with "panic"
// makes the upcaster panic, one starting with "spin" makes it loop forever
// (the tests' trap and fuel overrun).
package main

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/rhizon/rhizon/actor/wasm/sdk"
)

func init() {
	sdk.Register(sdk.Actor{Verbs: []string{"name", "split"}, Decide: decide, Evolve: evolve})
	sdk.Upcast(upcast)
}

func main() {}

type state struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

var spins int

func upcast(eventType string, v uint32, payload []byte) (string, uint32, []byte, error) {
	if !strings.HasSuffix(eventType, ".named") || v != 1 {
		return eventType, v, payload, nil
	}
	var p struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return "", 0, nil, errors.New("named v1: " + err.Error())
	}
	switch {
	case strings.HasPrefix(p.Name, "panic"):
		panic("upcaster cannot read " + p.Name)
	case strings.HasPrefix(p.Name, "spin"):
		for {
			spins++
		}
	}
	var s state
	s.First, s.Last, _ = strings.Cut(p.Name, " ")
	b, err := json.Marshal(s)
	return eventType, 2, b, err
}

// decide: "split" sets the fields given over the current state; "name"
// keeps revision 1's payload. Both record version 2.
func decide(_ *sdk.Context, st []byte, cmdType string, payload []byte) ([]sdk.Event, error) {
	var s state
	if len(st) > 0 {
		if err := json.Unmarshal(st, &s); err != nil {
			return nil, sdk.Reject("state_decode", err.Error())
		}
	}
	if strings.HasSuffix(cmdType, ".name") {
		var p struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(payload, &p); err != nil || p.Name == "" {
			return nil, sdk.Invalid(`payload is {"name": "First Last"}`)
		}
		s.First, s.Last, _ = strings.Cut(p.Name, " ")
	} else {
		var p state
		if err := json.Unmarshal(payload, &p); err != nil {
			return nil, sdk.Invalid(`payload is {"first": F, "last": L}`)
		}
		if p.First != "" {
			s.First = p.First
		}
		if p.Last != "" {
			s.Last = p.Last
		}
	}
	b, _ := json.Marshal(s)
	return []sdk.Event{{Name: "named", Payload: b, SchemaVersion: 2}}, nil
}

// evolve: Decide only emits version 2, whose payload is the state.
func evolve(_ []byte, _ string, payload []byte) ([]byte, error) {
	var s state
	if err := json.Unmarshal(payload, &s); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}
