package shard_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// partition is the fault switch of a group's transports: RPCs from or to a
// cut address fail, as if its links were down.
type partition struct {
	mu    sync.Mutex
	cut   map[raft.ServerAddress]bool
	links map[[2]raft.ServerAddress]bool // one direction each
}

// cutLink fails RPCs between a and b, both ways.
func (p *partition) cutLink(a, b raft.ServerAddress) {
	p.mu.Lock()
	p.links[[2]raft.ServerAddress{a, b}] = true
	p.links[[2]raft.ServerAddress{b, a}] = true
	p.mu.Unlock()
}

func (p *partition) set(a raft.ServerAddress, cut bool) {
	p.mu.Lock()
	p.cut[a] = cut
	p.mu.Unlock()
}

func (p *partition) isCut(a raft.ServerAddress) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut[a]
}

func (p *partition) blocked(from, to raft.ServerAddress) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut[from] || p.cut[to] || p.links[[2]raft.ServerAddress{from, to}] {
		return fmt.Errorf("partitioned: %s -> %s", from, to)
	}
	return nil
}

// cutTransport is a real TCP transport whose outbound RPCs the partition
// can fail. Pipelining is off so every append goes through AppendEntries.
type cutTransport struct {
	*raft.NetworkTransport
	p *partition
	// timeoutNowAt is when the last TimeoutNow left (unix nanoseconds).
	timeoutNowAt atomic.Int64
}

func (t *cutTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (t *cutTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.p.blocked(t.LocalAddr(), target); err != nil {
		return err
	}
	return t.NetworkTransport.AppendEntries(id, target, req, resp)
}

func (t *cutTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, req *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := t.p.blocked(t.LocalAddr(), target); err != nil {
		return err
	}
	return t.NetworkTransport.RequestVote(id, target, req, resp)
}

func (t *cutTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, req *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := t.p.blocked(t.LocalAddr(), target); err != nil {
		return err
	}
	return t.NetworkTransport.RequestPreVote(id, target, req, resp)
}

func (t *cutTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, req *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	t.timeoutNowAt.Store(time.Now().UnixNano())
	if err := t.p.blocked(t.LocalAddr(), target); err != nil {
		return err
	}
	return t.NetworkTransport.TimeoutNow(id, target, req, resp)
}

// group is a 3-voter shard over real Raft on loopback TCP and real Badger.
type group struct {
	t     testing.TB
	p     *partition
	trans []*cutTransport
	s     []*shard.Shard
	cfgs  []shard.Config
	dbs   []func() // close replica i's stores
}

func openGroup(t testing.TB, tune func(*shard.Config)) *group {
	t.Helper()
	if testing.Short() {
		t.Skip("3-node Raft group")
	}
	g := &group{t: t, p: &partition{cut: map[raft.ServerAddress]bool{}, links: map[[2]raft.ServerAddress]bool{}}}
	var peers []raft.Server
	for i := range 3 {
		nt, err := tcpTransport("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		g.trans = append(g.trans, &cutTransport{NetworkTransport: nt, p: g.p})
		peers = append(peers, raft.Server{ID: raft.ServerID(fmt.Sprint("n", i)), Address: nt.LocalAddr()})
	}
	for i := range 3 {
		dir := t.TempDir()
		cfg := shard.Config{
			ID: 5, NodeID: string(peers[i].ID), Registry: builtin.Registry(),
			Dir: filepath.Join(dir, "shard"), Transport: g.trans[i], Bootstrap: true, Peers: peers,
			HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
			LeaderLeaseTimeout: 500 * time.Millisecond, TickInterval: 20 * time.Millisecond,
		}
		if tune != nil {
			tune(&cfg)
		}
		g.cfgs = append(g.cfgs, cfg)
		g.s = append(g.s, nil)
		g.dbs = append(g.dbs, nil)
		g.open(i, dir)
	}
	t.Cleanup(func() {
		for i := range g.s {
			g.close(i)
		}
	})
	g.leader()
	return g
}

// open opens replica i over the stores in dir.
func (g *group) open(i int, dir string) {
	t := g.t
	state, err := storage.Open(filepath.Join(dir, "state"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := storage.OpenRaft(filepath.Join(dir, "raft"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := g.cfgs[i]
	cfg.StateDB, cfg.RaftDB, cfg.Transport = state, logs, g.trans[i]
	s, err := shard.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.s[i] = s
	g.dbs[i] = func() {
		logs.Close()
		state.Close()
	}
}

// close stops replica i (as a crash would for its peers) and its stores.
func (g *group) close(i int) {
	if g.s[i] == nil {
		return
	}
	if err := g.s[i].Close(); err != nil && !errors.Is(err, raft.ErrRaftShutdown) {
		g.t.Errorf("close shard: %v", err)
	}
	g.dbs[i]()
	g.s[i] = nil
}

// restart closes replica i and opens it again on its data and address.
func (g *group) restart(i int) {
	g.t.Helper()
	addr := g.trans[i].LocalAddr()
	dir := filepath.Dir(g.cfgs[i].Dir)
	g.close(i)
	nt, err := tcpTransport(string(addr))
	if err != nil {
		g.t.Fatal(err)
	}
	g.trans[i] = &cutTransport{NetworkTransport: nt, p: g.p}
	g.open(i, dir)
}

// leader waits for a leader and returns its index.
func (g *group) leader() int {
	g.t.Helper()
	at := -1
	testkit.Eventually(g.t, 20*time.Second, "a leader", func() (bool, string) {
		for i, s := range g.s {
			if s != nil && s.IsLeader() && !g.p.isCut(g.trans[i].LocalAddr()) {
				at = i
				return true, ""
			}
		}
		return false, "no leader"
	})
	return at
}

// tcpTransport is Raft over real TCP configured as cluster/raftmux configures
// a node's groups: no append pipeline (it can deadlock in hashicorp/raft; see
// raftmux's muxMaxInFlight).
func tcpTransport(addr string) (*raft.NetworkTransport, error) {
	return raft.NewTCPTransportWithConfig(addr, nil, &raft.NetworkTransportConfig{
		MaxPool: 3, MaxRPCsInFlight: 1, Timeout: 5 * time.Second,
		Logger: hclog.NewNullLogger(),
	})
}
