package gateway

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoServer: the gateway talks to a node through interfaces whose
// types come from leaf packages (actor, api/...), so it must not link the
// store, Raft or the NATS server; a new import of shard, engine or ingress
// brings them back, and this test names the path to cut.
func TestLinksNoServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/dgraph-io/badger", "github.com/hashicorp/raft", "github.com/nats-io/nats-server"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("the gateway links %s; find who imports it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./gateway", dep)
			}
		}
	}
}
