package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// --wasm-actor specs: TYPE=FILE.wasm@REVISION; anything else, a missing
// file or a file that is not a module is refused
// with a message saying what to fix.
func TestWasmActorSpecs(t *testing.T) {
	typ, path, rev, err := parseWasmActor("wcounter=dir/a@b/counter.wasm@12")
	if err != nil || typ != "wcounter" || path != "dir/a@b/counter.wasm" || rev != "12" {
		t.Fatalf("parse: %q %q %q %v", typ, path, rev, err)
	}
	junk := filepath.Join(t.TempDir(), "junk.wasm")
	if err := os.WriteFile(junk, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	for spec, want := range map[string]string{
		"counter.wasm":             "TYPE=FILE.wasm@REVISION",
		"w=counter.wasm":           "TYPE=FILE.wasm@REVISION",
		"w=counter.wasm@":          "TYPE=FILE.wasm@REVISION",
		"=counter.wasm@1":          "TYPE=FILE.wasm@REVISION",
		"a/b=counter.wasm@1":       "actor type",
		"w=/does/not/exist.wasm@1": "no such file",
		"w=" + junk + "@1":         "not a WebAssembly",
	} {
		if _, err := registry(&docTypesFlag{}, []string{spec}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	if reg, err := registry(&docTypesFlag{}, nil); err != nil || len(reg.Types()) == 0 {
		t.Fatalf("no specs: %v", err)
	}
}

// actor list groups the nodes by type and revision and names the live nodes
// that lack a type; dead nodes do not count.
func TestActorRows(t *testing.T) {
	st := &pb.StatusResponse{ActiveRevisions: map[string]string{"w": "2"}, DeployedOwners: map[string]string{"w": "acme"}, Nodes: []*pb.NodeStatus{
		{NodeId: "n2", State: "alive", ActorRevisions: map[string]string{"counter": "2", "w": "1"}},
		{NodeId: "n1", State: "alive", ActorRevisions: map[string]string{"counter": "2", "w": "1,2"}},
		{NodeId: "n3", State: "alive", ActorRevisions: map[string]string{"counter": "2"}},
		{NodeId: "n4", State: "dead", ActorRevisions: map[string]string{"old": "1"}},
	}}
	got := fmt.Sprintf("%v", actorRows(st))
	want := "[{counter map[2:[n1 n2 n3]] []  } {w map[1:[n1 n2] 2:[n1]] [n3] 2 acme}]"
	if got != want {
		t.Fatalf("rows %s, want %s", got, want)
	}
}
