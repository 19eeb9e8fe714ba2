package bench

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoServer: the load generator speaks to Rhizon through the client
// and the api/ leaves, so it must not link a node's store, Raft or the NATS
// server (it would measure itself heavier than it is and drag the server into
// every bench build).
func TestLinksNoServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/dgraph-io/badger", "github.com/hashicorp/raft", "github.com/nats-io/nats-server"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("bench links %s; find who imports it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./bench", dep)
			}
		}
	}
}
