// Package clustertest starts real Rhizon nodes in the test's process: Raft
// over TCP, Badger on disk in t.TempDir(), each node behind a real gRPC
// gateway on 127.0.0.1, with the fast Raft timings the tests use.
//
// It imports cluster, so only external test packages (package cluster_test,
// client, bench...) can use it: the internal tests of package cluster, and
// the tests of the packages cluster imports, would make an import cycle.
// Those use the parent package testkit, which imports nothing of Rhizon.
package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

// Options says what cluster to start: 3 nodes of 8 shards unless set.
type Options struct {
	// Nodes is the number of nodes (3 if zero). With more than one, Start
	// skips the test under -short, and every node has a replica of every
	// shard.
	Nodes int
	// Shards is the number of shards (8 if zero).
	Shards uint32
	// RaftGroups is how many Raft groups carry them (cluster.Config
	// .RaftGroups; zero: one per shard).
	RaftGroups uint32
	// Tokens are the gateways' bearer tokens; the gateway needs at least
	// one.
	Tokens []gateway.TokenEntry
	// ShardTemplate is the shards' Raft config; the zero value means
	// FastRaft().
	ShardTemplate shard.Config
	// AdvertiseAddr, if set, returns the gRPC address node i advertises to
	// its peers in place of the one it listens on (a fault-injecting
	// proxy, say). It is called once per node, in order.
	AdvertiseAddr func(t testing.TB, listenAddr string) string
	// DataDir, if set, returns node i's data directory (to restart a node
	// on the same data); otherwise each node gets its own t.TempDir().
	DataDir func(i int) string
	// Gateway, if set, adjusts each gateway's config before it is built.
	Gateway func(*gateway.Config)
	// Registry, if set, returns node i's actor registry (builtin.Registry()
	// otherwise): document types, a node that disagrees with the others, or WebAssembly
	// actors (they keep instances per shard, so two replicas of a shard in
	// one process need their own registries).
	Registry func(i int) *actor.Registry
	// Graceful makes the cleanup close the nodes (leaving the cluster)
	// rather than kill them as a crash would.
	Graceful bool
}

// FastRaft is the shard Raft config of the tests: elections in a few
// hundred milliseconds on loopback.
func FastRaft() shard.Config {
	return shard.Config{
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, TickInterval: 20 * time.Millisecond,
	}
}

// Node is one started node.
type Node struct {
	ID      string // n1, n2, ...
	Node    *cluster.Node
	Gateway *gateway.Server
	Srv     *grpc.Server
	Addr    string // the gateway's gRPC address, direct (not AdvertiseAddr's)

	graceful bool
	mu       sync.Mutex
	dead     bool
}

// Cluster is the nodes Start started, in order.
type Cluster struct {
	Nodes  []*Node
	groups uint32 // Raft groups: as many as shards unless Options.RaftGroups
}

// Start starts the nodes, registers their shutdown with t.Cleanup and
// waits until each is ready (every shard it hosts has a leader). It does
// not wait for leadership to settle: see WaitSettled.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Shards == 0 {
		o.Shards = 8
	}
	if reflect.ValueOf(o.ShardTemplate).IsZero() { // shard.Config has a slice: not comparable
		o.ShardTemplate = FastRaft()
	}
	if o.Nodes > 1 && testing.Short() {
		t.Skipf("starts a %d-node cluster", o.Nodes)
	}
	auth, err := gateway.NewAuth("test", o.Tokens)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := &Cluster{groups: o.Shards}
	if o.RaftGroups != 0 && o.RaftGroups < o.Shards {
		c.groups = o.RaftGroups // leaders are per group
	}
	var join []string
	expect := 0 // a single node bootstraps alone
	if o.Nodes > 1 {
		expect = o.Nodes
	}
	for i := range o.Nodes {
		id := fmt.Sprintf("n%d", i+1)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		advertise := l.Addr().String()
		if o.AdvertiseAddr != nil {
			advertise = o.AdvertiseAddr(t, advertise)
		}
		dir := ""
		if o.DataDir != nil {
			dir = o.DataDir(i)
		} else {
			dir = t.TempDir()
		}
		reg := builtin.Registry()
		if o.Registry != nil {
			reg = o.Registry(i)
		}
		n, err := cluster.Open(cluster.Config{
			NodeID: id, DataDir: dir, Shards: o.Shards, RaftGroups: o.RaftGroups, Registry: reg, Logger: quiet,
			ShardTemplate: o.ShardTemplate, Version: "test", GRPCAddr: advertise, ClusterSecret: "test-secret",
			FastGossip: true, BootstrapExpect: expect, Join: join,
			// A killed node stays a replica: tests restart or inspect it,
			// and a move of its replicas would only slow them down.
			DeadAfter: time.Hour,
		})
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		if i == 0 {
			join = []string{n.GossipAddr()}
		}
		gcfg := gateway.Config{Backend: n, Auth: auth, NodeID: id, Version: "test", Logger: quiet}
		if o.Gateway != nil {
			o.Gateway(&gcfg)
		}
		gw, err := gateway.New(gcfg)
		if err != nil {
			l.Close()
			_ = n.Kill()
			t.Fatal(err)
		}
		srv := grpc.NewServer(gateway.ServerOptions()...)
		gw.RegisterGRPC(srv)
		n.RegisterGRPC(srv)
		go func() { _ = srv.Serve(l) }() // returns when the node stops
		cn := &Node{ID: id, Node: n, Gateway: gw, Srv: srv, Addr: l.Addr().String(), graceful: o.Graceful}
		c.Nodes = append(c.Nodes, cn)
		t.Cleanup(func() {
			if err := cn.stop(cn.graceful); err != nil {
				t.Errorf("stop %s: %v", cn.ID, err)
			}
		})
	}
	for _, cn := range c.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := cn.Node.WaitReady(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s not ready: %v", cn.ID, err)
		}
	}
	return c
}

// Kill stops the node's gateway and the node as a crash would (no graceful
// leave). A second call, or the cleanup after it, does nothing.
func (n *Node) Kill() error { return n.stop(false) }

// Close stops the node's gateway and closes the node (it leaves the
// cluster), as an orderly shutdown would; then the node's data directory can
// be opened again. A second call, or the cleanup after it, does nothing.
func (n *Node) Close() error { return n.stop(true) }

func (n *Node) stop(graceful bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dead {
		return nil
	}
	n.dead = true
	n.Srv.Stop()
	n.Gateway.Shutdown()
	if graceful {
		return n.Node.Close()
	}
	return n.Node.Kill()
}

// Alive reports whether the node has not been stopped.
func (n *Node) Alive() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.dead
}

// Kill kills node i (see Node.Kill).
func (c *Cluster) Kill(i int) error { return c.Nodes[i].Kill() }

// Node returns the node of that id, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Live returns the nodes not stopped, in order.
func (c *Cluster) Live() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Alive() {
			out = append(out, n)
		}
	}
	return out
}

// Addrs returns every node's gateway address, dead ones included (a client
// given them must cope).
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// Leaders returns, by shard (by Raft group, with Options.RaftGroups), the
// id of the live node whose replica leads it: "" if none does, or several
// think they do.
func (c *Cluster) Leaders() []string {
	out := make([]string, c.groups)
	count := make([]int, c.groups)
	for _, n := range c.Live() {
		for _, s := range n.Node.Shards() {
			if s.IsLeader() && s.ID() < c.groups {
				out[s.ID()] = n.ID
				count[s.ID()]++
			}
		}
	}
	for i := range out {
		if count[i] != 1 {
			out[i] = ""
		}
	}
	return out
}

// Leader returns the live node leading shard id, or an error that says
// what the cluster looks like; poll it with testkit.EventuallyNil.
func (c *Cluster) Leader(id uint32) (*Node, error) {
	ls := c.Leaders()
	if int(id) >= len(ls) {
		return nil, fmt.Errorf("shard %d of %d", id, len(ls))
	}
	if ls[id] == "" {
		return nil, fmt.Errorf("shard %d has no single leader; leaders %v", id, ls)
	}
	return c.Node(ls[id]), nil
}

// WaitSettled waits until every shard has one leader and no leadership has
// moved for two seconds (the controller spreads leaders after a start or a
// failure).
func (c *Cluster) WaitSettled(t testing.TB) {
	t.Helper()
	testkit.Settles(t, 60*time.Second, 2*time.Second, "leadership settled", func() (string, bool) {
		cur := c.Leaders()
		return fmt.Sprint(cur), !slices.Contains(cur, "")
	})
}
