// Package peer starts the systems Rhizon is compared with, the way a user
// would run them for durability: three servers replicating on loopback,
// each with a fresh data directory. `rhizon bench-peer` runs each server
// in a child process of `rhizon bench` of its own, as each Rhizon node is
// (so that neither side shares a process the other does not, and the
// servers' CPU is accounted apart from the load generator's); tests and
// `rhizon bench-peer` without --server run a whole cluster in-process.
package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// Layout is where the servers of one cluster listen. It is chosen before
// any server starts, because each must know its peers' addresses; the
// parent of one-process-per-server passes it to every child.
type Layout struct {
	Kind string `json:"kind"`
	// PeerPorts are the servers' replication ports (etcd's peer URLs,
	// NATS's cluster routes), ClientPorts their client ports, both on
	// 127.0.0.1 and indexed by server.
	PeerPorts   []int `json:"peer_ports"`
	ClientPorts []int `json:"client_ports"`
}

// NewLayout picks free loopback ports for a cluster of kind.
func NewLayout(kind string) (Layout, error) {
	if !slices.Contains(Kinds, kind) {
		return Layout{}, fmt.Errorf("peer: unknown kind %q (known: %s)", kind, strings.Join(Kinds, ", "))
	}
	ports, err := freePorts(2 * Replicas)
	if err != nil {
		return Layout{}, err
	}
	return Layout{Kind: kind, PeerPorts: ports[:Replicas], ClientPorts: ports[Replicas:]}, nil
}

func (l Layout) check(i int) error {
	if !slices.Contains(Kinds, l.Kind) {
		return fmt.Errorf("peer: unknown kind %q (known: %s)", l.Kind, strings.Join(Kinds, ", "))
	}
	if len(l.PeerPorts) != Replicas || len(l.ClientPorts) != Replicas {
		return fmt.Errorf("peer: layout has %d peer and %d client ports, want %d each", len(l.PeerPorts), len(l.ClientPorts), Replicas)
	}
	if i < 0 || i >= Replicas {
		return fmt.Errorf("peer: server %d of %d", i, Replicas)
	}
	return nil
}

// Server is one running server of a cluster.
type Server struct {
	// URL is its client URL (http://host:port for etcd, nats://host:port
	// for NATS).
	URL string

	isLeader func() bool // nil where it does not matter for stopping
	close    func() error
}

// Close stops the server and waits for it. It does not remove its Dir.
func (s *Server) Close() error {
	if s.close == nil {
		return nil
	}
	f := s.close
	s.close = nil
	return f()
}

// StartServer starts server i of layout l with its data in cfg.Dir and
// returns once it serves clients and its cluster can take writes (etcd:
// the member has published itself through the Raft log, which needs a
// quorum; NATS: the server is current with a JetStream meta leader). The
// other servers must be started concurrently, in this or other processes.
func StartServer(ctx context.Context, l Layout, i int, cfg Config) (*Server, error) {
	if err := l.check(i); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, errors.New("peer: Config.Dir is required")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if l.Kind == KindEtcd {
		return startEtcdMember(ctx, l, i, cfg)
	}
	return startNATSServer(ctx, l, i, cfg)
}

// Cluster is a running peer cluster in this process.
type Cluster struct {
	// Kind is one of Kinds.
	Kind string
	// URLs are the client URLs, one per server.
	URLs []string

	servers []*Server
}

// Close stops every server and waits for them. It does not remove Dir.
// The followers stop first: an etcd leader stopping while its peers are
// up hands its leadership to one of them, which then waits out the same
// handover as it stops too (7 s in all); once its peers are gone, the
// leader has no one to hand over to and stops at once.
func (c *Cluster) Close() error {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		leaders []*Server
	)
	closeOne := func(s *Server) {
		err := s.Close()
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for _, s := range c.servers {
		if s.isLeader != nil && s.isLeader() {
			leaders = append(leaders, s)
			continue
		}
		wg.Go(func() { closeOne(s) })
	}
	wg.Wait()
	for _, s := range leaders {
		closeOne(s)
	}
	c.servers = nil
	return errors.Join(errs...)
}

// Start starts a cluster of the given kind in this process and returns
// once it can take writes (a leader elected, every server serving
// clients), or ctx ends. Ports are picked free just before the servers
// bind them, so another process can take one in between: a bind failure
// is retried with new ports a few times.
func Start(ctx context.Context, kind string, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("peer: Config.Dir is required")
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
		if c, err = startCluster(ctx, kind, dir, cfg); err == nil {
			return c, nil
		}
		if !AddrInUse(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("peer: start %s: %w", kind, err)
}

// startCluster starts the three servers concurrently: each waits for a
// quorum of the others before it is ready.
func startCluster(ctx context.Context, kind, dir string, cfg Config) (*Cluster, error) {
	l, err := NewLayout(kind)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Kind: kind, servers: make([]*Server, Replicas)}
	errs := make([]error, Replicas)
	var wg sync.WaitGroup
	for i := range Replicas {
		wg.Go(func() {
			scfg := cfg
			scfg.Dir = filepath.Join(dir, ServerName(kind, i))
			c.servers[i], errs[i] = StartServer(ctx, l, i, scfg)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.servers = slices.DeleteFunc(c.servers, func(s *Server) bool { return s == nil })
		_ = c.Close()
		return nil, err
	}
	for _, s := range c.servers {
		c.URLs = append(c.URLs, s.URL)
	}
	return c, nil
}

// ServerName names server i of a cluster of kind (its etcd member or NATS
// server name, and its data directory's).
func ServerName(kind string, i int) string {
	if kind == KindEtcd {
		return fmt.Sprintf("m%d", i+1)
	}
	return fmt.Sprintf("n%d", i+1)
}

// AddrInUse tells a lost race for a port from other failures. etcd does
// not always wrap the listener's error, so its text is checked too.
func AddrInUse(err error) bool {
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
