// Command counter2 is revision 2 of a test counter type: each add counts
// double. Its state and events have the example counter's shapes, so it can
// take over entities revision 1 (examples/wasm/counter) wrote.
package main

import (
	"bytes"
	"errors"
	"strconv"

	"github.com/rhizon/rhizon/actor/wasm/sdk"
)

func init() {
	sdk.Register(sdk.Actor{Verbs: []string{"add"}, Decide: decide, Evolve: evolve})
}

func main() {}

// after returns the integer after key in b (the shapes the counters write).
func after(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(`"`+key+`":`))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(key)+3:]
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(rest[:end])), 10, 64)
	return v, err == nil
}

func decide(_ *sdk.Context, state []byte, _ string, payload []byte) ([]sdk.Event, error) {
	v, _ := after(state, "value")
	n, ok := after(payload, "amount")
	if !ok || n == 0 {
		return nil, sdk.Invalid("amount must be a non-zero integer")
	}
	ev := `{"amount":` + strconv.FormatInt(2*n, 10) + `,"value":` + strconv.FormatInt(v+2*n, 10) + `}`
	return []sdk.Event{{Name: "added", Payload: []byte(ev)}}, nil
}

func evolve(_ []byte, _ string, payload []byte) ([]byte, error) {
	v, ok := after(payload, "value")
	if !ok {
		return nil, errors.New("event without a value")
	}
	return []byte(`{"value":` + strconv.FormatInt(v, 10) + `}`), nil
}
