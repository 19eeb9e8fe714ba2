// Package peerserver starts the servers of the systems Rhizon is compared
// with (an embedded etcd member, a nats-server with JetStream), the way a
// user would run them for durability: three servers replicating on
// loopback, each with a fresh data directory. `rhizon bench-peer` runs
// each server in a child process of `rhizon bench` of its own, as each
// Rhizon node is (so that neither side shares a process the other does
// not, and the servers' CPU is accounted apart from the load
// generator's); tests and `rhizon bench-peer` without --server run a
// whole cluster in-process. Only `rhizon bench-peer` links this package:
// the load generator (package bench) must not link the servers.
package peerserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/rhizon/rhizon/bench/peer"
)

// Config says where a cluster keeps its data and logs.
type Config struct {
	// Dir holds one subdirectory per server; it must exist. The caller
	// owns it and removes it after Close.
	Dir string
	// Log receives the servers' warnings and errors; nil discards them.
	// It must be safe for concurrent writes (an *os.File is).
	Log io.Writer
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
func StartServer(ctx context.Context, l peer.Layout, i int, cfg Config) (*Server, error) {
	if err := l.Check(i); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, errors.New("peer: Config.Dir is required")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if l.Kind == peer.KindEtcd {
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
		if !peer.AddrInUse(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("peer: start %s: %w", kind, err)
}

// startCluster starts the three servers concurrently: each waits for a
// quorum of the others before it is ready.
func startCluster(ctx context.Context, kind, dir string, cfg Config) (*Cluster, error) {
	l, err := peer.NewLayout(kind)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Kind: kind, servers: make([]*Server, peer.Replicas)}
	errs := make([]error, peer.Replicas)
	var wg sync.WaitGroup
	for i := range peer.Replicas {
		wg.Go(func() {
			scfg := cfg
			scfg.Dir = filepath.Join(dir, peer.ServerName(kind, i))
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
