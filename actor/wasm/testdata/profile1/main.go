// Command profile1 is revision 1 of a test actor whose event changed shape:
// its verb "name" records "named" at schema version 1, {"name": "First
// Last"}. The state is {"first", "last"} in both revisions.
package main

import (
	"encoding/json"
	"strings"

	"github.com/rhizon/rhizon/actor/wasm/sdk"
)

func init() {
	sdk.Register(sdk.Actor{Verbs: []string{"name"}, Decide: decide, Evolve: evolve})
}

func main() {}

type state struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

func decide(_ *sdk.Context, _ []byte, _ string, payload []byte) ([]sdk.Event, error) {
	var p struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(payload, &p); err != nil || p.Name == "" {
		return nil, sdk.Invalid(`payload is {"name": "First Last"}`)
	}
	b, _ := json.Marshal(p)
	return []sdk.Event{{Name: "named", Payload: b}}, nil
}

func evolve(_ []byte, _ string, payload []byte) ([]byte, error) {
	var p struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, err
	}
	var s state
	s.First, s.Last, _ = strings.Cut(p.Name, " ")
	return json.Marshal(s)
}
