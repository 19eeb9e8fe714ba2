package bench

import (
	"testing"

	"github.com/rhizon/rhizon/internal/testkit"
)

// TestLinksNoServer: the load generator speaks to Rhizon through the client
// and the api/ leaves, so it must not link a node's store, Raft or Rhizon's
// server packages. (It does link the peers' own servers, etcd and
// nats-server, through bench/peer: those run in `rhizon bench-peer` children.)
func TestLinksNoServer(t *testing.T) {
	testkit.NotLinked(t, ".", "github.com/dgraph-io/badger", "github.com/hashicorp/raft",
		"github.com/rhizon/rhizon/natsserver", "github.com/rhizon/rhizon/shard", "github.com/rhizon/rhizon/storage",
		"github.com/rhizon/rhizon/engine", "github.com/rhizon/rhizon/cluster", "github.com/rhizon/rhizon/ingress",
		"github.com/rhizon/rhizon/relay", "github.com/rhizon/rhizon/gateway")
}
