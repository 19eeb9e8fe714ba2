// Package ingresstest starts, for tests, a real node (Raft and Badger on disk)
// with a real embedded NATS server and the ingress manager over them, in
// process, and removes them when the test ends.
package ingresstest

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/natsserver"
	"github.com/rhizon/rhizon/shard"
)

// Secret is the node's cluster secret (and so the ingress signing key's).
const Secret = "ingresstest-secret"

// Env is one running node with NATS and the ingress manager.
type Env struct {
	Node    *cluster.Node
	NATS    *natsserver.Server // the embedded server; nil with Options.NATSURLs
	Conn    *nats.Conn
	JS      jetstream.JetStream
	Manager *ingress.Manager
}

// Options of Start; the zero value is a 2-shard node with quiet logs.
type Options struct {
	Shards uint32
	// RaftGroups is how many Raft groups carry the shards (0: one each).
	RaftGroups uint32
	// Tune changes the ingress configuration before the manager starts
	// (Submit = nil: actors' Sends through the ingress stream only).
	Tune   func(*ingress.Config)
	Logger *slog.Logger // default: discard
	// NATSURLs, when set, are the client URLs of a clustered NATS to use
	// instead of an embedded server; the streams then have 3 replicas.
	NATSURLs []string
	// Registry is the node's actor code; nil means builtin.Registry().
	Registry *actor.Registry
}

// Start starts the node, the server and the manager and waits until the
// node is ready and the streams exist.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	if o.Shards == 0 {
		o.Shards = 2
	}
	if o.Registry == nil {
		o.Registry = builtin.Registry()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := t.TempDir()
	var ns *natsserver.Server
	if len(o.NATSURLs) == 0 {
		var err error
		ns, err = natsserver.StartEmbedded(natsserver.EmbeddedConfig{ServerName: "test", Addr: "127.0.0.1:0", StoreDir: dir + "/nats"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ns.Shutdown)
	}
	n, err := cluster.Open(cluster.Config{
		NodeID: "n1", DataDir: dir + "/node", Shards: o.Shards, RaftGroups: o.RaftGroups, Registry: o.Registry, Logger: o.Logger,
		ShardTemplate: shard.Config{HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond},
		Version:       "test", GRPCAddr: "127.0.0.1:1", ClusterSecret: Secret, FastGossip: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	url, opts, replicas := strings.Join(o.NATSURLs, ","), []nats.Option(nil), 3
	if ns != nil {
		url, opts, replicas = "", []nats.Option{nats.InProcessServer(ns)}, 1
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := ingress.Config{
		Conn: nc, Replicas: replicas, ShardOf: n.ShardOf, Registry: n.Registry(), SigningKey: ingress.SigningKey(Secret),
		Shards: ingress.ShardsOf(n.Shards), ShardCount: func() uint32 { return n.ClusterState().Shards }, Logger: o.Logger,
		Submit: n.Submit, // as a node does: actors' Sends go to their targets directly
	}
	if o.Tune != nil {
		o.Tune(&cfg)
	}
	mgr, err := ingress.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Close) // runs before the node and the server close
	select {
	case <-mgr.Ready():
	case <-ctx.Done():
		t.Fatal("JetStream streams not ready in 30s")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Node: n, NATS: ns, Conn: nc, JS: js, Manager: mgr}
}
