package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/actor/wasm"
)

// wasmActorUsage documents --wasm-actor (node, dev and replay).
const wasmActorUsage = "load a WebAssembly actor at start: TYPE=FILE.wasm@REVISION (repeatable; " +
	"build FILE with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared); every node of a cluster needs the same modules"

func addWasmActorFlag(fs *pflag.FlagSet, specs *[]string) {
	fs.StringArrayVar(specs, "wasm-actor", nil, wasmActorUsage)
}

// parseWasmActor splits TYPE=FILE.wasm@REVISION.
func parseWasmActor(spec string) (typ, path, revision string, err error) {
	typ, rest, ok := strings.Cut(spec, "=")
	if ok {
		if i := strings.LastIndexByte(rest, '@'); i > 0 && i < len(rest)-1 {
			path, revision = rest[:i], rest[i+1:]
		}
	}
	if typ == "" || path == "" || revision == "" {
		return "", "", "", fmt.Errorf("--wasm-actor %q: want TYPE=FILE.wasm@REVISION, e.g. wcounter=counter.wasm@1", spec)
	}
	if err := actor.ValidateID("actor type", typ); err != nil {
		return "", "", "", fmt.Errorf("--wasm-actor %q: %w", spec, err)
	}
	return typ, path, revision, nil
}

// actorRegistry is the built-in actors plus the WebAssembly ones of specs.
func actorRegistry(specs []string) (*actor.Registry, error) {
	bs := builtin.All()
	for _, spec := range specs {
		typ, path, rev, err := parseWasmActor(spec)
		if err != nil {
			return nil, err
		}
		code, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--wasm-actor %s: %w", spec, err)
		}
		b, err := wasm.Load(context.Background(), typ, rev, code, wasm.Config{})
		if err != nil {
			return nil, fmt.Errorf("--wasm-actor %s: %w", spec, err)
		}
		bs = append(bs, b)
	}
	reg, err := actor.NewRegistry(bs...)
	if err != nil {
		return nil, fmt.Errorf("--wasm-actor: %w (built-in types: %v)", err, builtin.Registry().Types())
	}
	return reg, nil
}
