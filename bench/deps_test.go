package bench

import (
	"testing"

	"github.com/rhizon/rhizon/internal/testkit"
)

// TestLinksNoServer: the load generator speaks to Rhizon through the client
// and the api/ leaves, and to the peers through their client libraries, so
// it must link neither a Rhizon node's store, Raft or server packages nor
// the peers' servers (etcd's server and Raft, bbolt, nats-server): those
// run in `rhizon bench-peer` children, which alone link bench/peer/peerserver.
func TestLinksNoServer(t *testing.T) {
	testkit.NotLinked(t, ".", "github.com/dgraph-io/badger", "github.com/hashicorp/raft",
		"github.com/rhizon/rhizon/natsserver", "github.com/rhizon/rhizon/shard", "github.com/rhizon/rhizon/storage",
		"github.com/rhizon/rhizon/engine", "github.com/rhizon/rhizon/cluster", "github.com/rhizon/rhizon/ingress",
		"github.com/rhizon/rhizon/relay", "github.com/rhizon/rhizon/gateway",
		"github.com/rhizon/rhizon/bench/peer/peerserver", "github.com/nats-io/nats-server",
		"go.etcd.io/etcd/server", "go.etcd.io/raft", "go.etcd.io/bbolt")
}

// TestPeerLinksNoServer: bench/peer is the peers' vocabulary (kinds,
// layouts) that the load generator plans with; the servers are in
// bench/peer/peerserver.
func TestPeerLinksNoServer(t *testing.T) {
	testkit.NotLinked(t, "./peer", "github.com/nats-io/nats-server", "go.etcd.io/etcd/server",
		"go.etcd.io/raft", "go.etcd.io/bbolt", "github.com/rhizon/rhizon/bench/peer/peerserver")
}
