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

// addWasmActors loads the modules of specs into reg. Two specs of one type
// are two revisions of it (the first is its base), switched between with
// rhizon actor activate.
func addWasmActors(reg *actor.Registry, specs []string) error {
	for _, spec := range specs {
		typ, path, rev, err := parseWasmActor(spec)
		if err != nil {
			return &exitErr{exitUsage, err}
		}
		if _, builtinType := builtin.Registry().Lookup(typ); builtinType {
			return &exitErr{exitUsage, fmt.Errorf("--wasm-actor %s: %q is a built-in type; choose another (built-in: %v)", spec, typ, builtin.Registry().Types())}
		}
		code, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--wasm-actor %s: %w", spec, err)
		}
		b, err := wasm.Load(context.Background(), typ, rev, code, wasm.Config{})
		if err != nil {
			return fmt.Errorf("--wasm-actor %s: %w", spec, err)
		}
		if err := reg.AddRevision(b); err != nil {
			return &exitErr{exitUsage, fmt.Errorf("--wasm-actor %s: %w", spec, err)}
		}
	}
	return nil
}
