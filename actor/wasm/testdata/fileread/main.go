// Command fileread is a test actor that reads a file: the runtime must
// refuse it at load.
package main

import (
	"os"

	"github.com/rhizon/rhizon/actor/wasm/sdk"
)

func init() {
	sdk.Register(sdk.Actor{
		Verbs: []string{"read"},
		Decide: func(_ *sdk.Context, _ []byte, _ string, _ []byte) ([]sdk.Event, error) {
			b, err := os.ReadFile("/etc/passwd")
			if err != nil {
				return nil, err
			}
			return []sdk.Event{{Name: "read", Payload: b}}, nil
		},
		Evolve: func(state []byte, _ string, _ []byte) ([]byte, error) { return state, nil },
	})
}

func main() {}
