// Package peer starts the systems Rhizon is compared with, the way a user
// would run them for durability: three servers replicating on loopback,
// each with a fresh data directory. `rhizon bench-peer` runs them in a
// child process of `rhizon bench` (so their CPU is accounted apart from
// the load generator's, as a Rhizon node's is); tests run them in-process.
package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"syscall"
)

// Kinds of peer clusters.
const (
	// KindEtcd is a 3-member etcd v3.7.3 cluster (embedded server): every
	// write is committed by a quorum with the WAL fsynced before the ack.
	KindEtcd = "etcd"
	// KindJetStreamKV is 3 clustered nats-server v2.15.2 servers with
	// their default fsync: JetStream acknowledges a write once a quorum
	// holds it, and flushes to disk every 2 minutes.
	KindJetStreamKV = "jetstream-kv"
	// KindJetStreamKVSync is KindJetStreamKV with SyncAlways on every
	// server: each write is fsynced before it counts.
	KindJetStreamKVSync = "jetstream-kv-sync"
)

// Kinds lists every kind Start knows.
var Kinds = []string{KindEtcd, KindJetStreamKV, KindJetStreamKVSync}

// Replicas is the size of every peer cluster: the same replication as a
// Rhizon shard.
const Replicas = 3

// Config says where a cluster keeps its data and logs.
type Config struct {
	// Dir holds one subdirectory per server; it must exist. The caller
	// owns it and removes it after Close.
	Dir string
	// Log receives the servers' warnings and errors; nil discards them.
	// It must be safe for concurrent writes (an *os.File is).
	Log io.Writer
}

// Cluster is a running peer cluster.
type Cluster struct {
	// Kind is one of Kinds.
	Kind string
	// URLs are the client URLs, one per server (http://host:port for etcd,
	// nats://host:port for NATS).
	URLs []string

	close func() error
}

// Close stops every server and waits for them. It does not remove Dir.
func (c *Cluster) Close() error {
	if c.close == nil {
		return nil
	}
	f := c.close
	c.close = nil
	return f()
}

// Start starts a cluster of the given kind and returns once it can take
// writes (a leader elected, every server serving clients), or ctx ends.
// Ports are picked free just before the servers bind them, so another
// process can take one in between: a bind failure is retried with new
// ports a few times.
func Start(ctx context.Context, kind string, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("peer: Config.Dir is required")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	var start func(context.Context, string, Config) (*Cluster, error)
	switch kind {
	case KindEtcd:
		start = func(ctx context.Context, dir string, cfg Config) (*Cluster, error) {
			cfg.Dir = dir
			return startEtcd(ctx, cfg)
		}
	case KindJetStreamKV, KindJetStreamKVSync:
		start = func(ctx context.Context, dir string, cfg Config) (*Cluster, error) {
			cfg.Dir = dir
			return startJetStream(ctx, cfg, kind == KindJetStreamKVSync)
		}
	default:
		return nil, fmt.Errorf("peer: unknown kind %q (known: %s)", kind, strings.Join(Kinds, ", "))
	}
	var err error
	for attempt := range 3 {
		// A fresh directory per attempt: a half-started cluster leaves
		// state that the next one must not find.
		dir := fmt.Sprintf("%s/try%d", cfg.Dir, attempt)
		if err = os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		var c *Cluster
		if c, err = start(ctx, dir, cfg); err == nil {
			return c, nil
		}
		if !addrInUse(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("peer: start %s: %w", kind, err)
}

// addrInUse tells a lost race for a port from other failures. etcd does
// not always wrap the listener's error, so its text is checked too.
func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// freePorts returns n distinct loopback ports that were free a moment ago,
// picked below the kernel's ephemeral range: a port in that range, once
// closed, can be taken by any port-0 listener or outgoing connection (a
// NATS server's own client port once took another's route port) before
// its server binds it.
func freePorts(n int) ([]int, error) {
	lo, hi := 20000, 32000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var eph int
		if _, err := fmt.Sscan(string(b), &eph); err == nil && eph > lo+2000 {
			hi = eph
		}
	}
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			return nil, fmt.Errorf("peer: no %d free ports in 127.0.0.1:%d-%d", n, lo, hi-1)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue // taken; the open listeners keep the chosen ones distinct
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
