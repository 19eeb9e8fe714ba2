package gateway

import (
	"testing"

	"github.com/rhizon/rhizon/internal/testkit"
)

// TestLinksNoServer: the gateway talks to a node through interfaces whose
// types come from leaf packages (actor, api/...), so it must not link the
// store, Raft or the NATS server; a new import of shard, engine or ingress
// brings them back, and this test names the path to cut.
func TestLinksNoServer(t *testing.T) {
	testkit.NotLinked(t, ".", "github.com/dgraph-io/badger", "github.com/hashicorp/raft", "github.com/nats-io/nats-server")
}
