package engine_test

import (
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/go/packages"
)

const module = "github.com/rhizon/rhizon/"

// deps returns the import paths of pkg's non-test transitive dependencies
// (what `go list -deps` prints), sorted.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	pkgs, err := packages.Load(&packages.Config{Mode: packages.NeedName | packages.NeedImports | packages.NeedDeps}, pkg)
	if err != nil || len(pkgs) != 1 {
		t.Fatalf("load %s: %v (%d packages)", pkg, err, len(pkgs))
	}
	seen := map[string]bool{}
	var walk func(p *packages.Package)
	walk = func(p *packages.Package) {
		for _, e := range p.Errors {
			t.Fatalf("%s: %v", p.PkgPath, e)
		}
		for path, dep := range p.Imports { //rhizon:deterministic test code: the result is sorted
			if !seen[path] {
				seen[path] = true
				walk(dep)
			}
		}
	}
	walk(pkgs[0])
	out := make([]string, 0, len(seen))
	for path := range seen { //rhizon:deterministic test code: sorted below
		out = append(out, path)
	}
	slices.Sort(out)
	return out
}

// standard reports whether path is in the standard library (its first
// element has no dot; vendor/ is the standard library's own vendoring).
func standard(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// TestPromise_Determinism_EngineLinksOnlyTheCore checks the engine's whole
// dependency closure, not only its direct imports: a package it imports could
// otherwise bring in the network (the public API's gRPC stubs once did). The
// engine links the standard library, protobuf, actor and the record schema.
func TestPromise_Determinism_EngineLinksOnlyTheCore(t *testing.T) {
	allowed := func(path string) bool {
		return standard(path) || strings.HasPrefix(path, "google.golang.org/protobuf/") ||
			path == module+"actor" || path == module+"api/recordv1" ||
			// The registry's lock for run-time deployed actors: a
			// *sync.RWMutex and nothing else (standard library).
			path == module+"internal/rwlock" ||
			// Byte chunks for an entry's writes (standard library only).
			path == module+"internal/slab"
	}
	for _, path := range deps(t, module+"engine") {
		if !allowed(path) {
			t.Errorf("engine depends on %s: only the standard library, protobuf, actor and api/recordv1 may be linked", path)
		}
	}
}

// The shard links Raft and Badger by design, but none of the serving side:
// no gRPC, no NATS, no public API package. (net/http is in its closure through
// hashicorp/raft's go-metrics and OpenTelemetry's propagation, not through
// Rhizon code.)
func TestShardLinksNoServingSide(t *testing.T) {
	forbidden := []string{"google.golang.org/grpc", "github.com/nats-io/", module + "api/rhizonv1",
		module + "gateway", module + "cluster", module + "ingress", module + "client"}
	for _, path := range deps(t, module+"shard") {
		for _, f := range forbidden {
			if strings.HasPrefix(path, f) {
				t.Errorf("shard depends on %s", path)
			}
		}
	}
}
