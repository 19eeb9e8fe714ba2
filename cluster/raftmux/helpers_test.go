package raftmux

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/rhizon/rhizon/internal/testkit"
)

// muxLeakCheck verifies, after every other cleanup of the test has run, that
// no goroutine the test started is still alive.
func muxLeakCheck(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// muxTestLog writes through t.Log until the test ends; NetworkTransport's
// connection handlers may log after that, which t.Log would panic on.
type muxTestLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func newMuxTestLog(t testing.TB) *muxTestLog {
	w := &muxTestLog{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return w
}

func (w *muxTestLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *muxTestLog) slog() *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testMuxSecret is the cluster secret of the tests' muxes.
const testMuxSecret = "test-secret"

func listenTestMux(t testing.TB, addr string, lw *muxTestLog) *Mux {
	t.Helper()
	var m *Mux
	// A just-closed listener's port can linger briefly; retry.
	testkit.Poll{Timeout: 5 * time.Second, Every: 50 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
		var err error
		m, err = Listen(Config{BindAddr: addr, Secret: testMuxSecret, Logger: lw.slog(), HandshakeTimeout: 500 * time.Millisecond})
		return err
	})
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// countFSM records every applied command in order.
type countFSM struct {
	mu  sync.Mutex
	seq []string
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq = append(f.seq, string(l.Data))
	return len(f.seq)
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return countSnapshot(slices.Clone(f.seq)), nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var seq []string
	if err := json.NewDecoder(rc).Decode(&seq); err != nil {
		return err
	}
	f.mu.Lock()
	f.seq = seq
	f.mu.Unlock()
	return nil
}

func (f *countFSM) snapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.seq)
}

type countSnapshot []string

func (s countSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

// muxReplica is one group's replica on one test node; its stores outlive
// restarts of the node.
type muxReplica struct {
	logs  *raft.InmemStore
	snaps *raft.InmemSnapshotStore
	fsm   *countFSM
	r     *raft.Raft
}

type muxTestNode struct {
	id       raft.ServerID
	addr     string
	mux      *Mux
	replicas map[uint32]*muxReplica
	up       bool
}

type muxTestCluster struct {
	t      *testing.T
	lw     *muxTestLog
	groups []uint32
	nodes  []*muxTestNode
	// timeout is the groups' heartbeat and election timeout.
	timeout time.Duration
}

// newMuxTestCluster starts 3 nodes, each with one mux, and one 3-voter Raft
// group per entry of groups across them.
func newMuxTestCluster(t *testing.T, groups []uint32) *muxTestCluster {
	return newMuxTestClusterTimeout(t, groups, 200*time.Millisecond)
}

// newMuxTestClusterTimeout is newMuxTestCluster with the groups' heartbeat
// and election timeout.
func newMuxTestClusterTimeout(t *testing.T, groups []uint32, timeout time.Duration) *muxTestCluster {
	c := &muxTestCluster{t: t, lw: newMuxTestLog(t), groups: groups, timeout: timeout}
	for i := range 3 {
		m := listenTestMux(t, "127.0.0.1:0", c.lw)
		n := &muxTestNode{id: raft.ServerID(fmt.Sprintf("n%d", i)), addr: string(m.Addr()), mux: m, replicas: map[uint32]*muxReplica{}}
		for _, g := range groups {
			n.replicas[g] = &muxReplica{logs: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()}
		}
		c.nodes = append(c.nodes, n)
	}
	var conf raft.Configuration
	for _, n := range c.nodes {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: n.id, Address: raft.ServerAddress(n.addr)})
	}
	for _, n := range c.nodes {
		c.startRafts(n, &conf)
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *muxTestCluster) raftConfig(n *muxTestNode, g uint32) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = n.id
	// Tuned for 2 cores under -race: fast enough to keep the test short,
	// slack enough not to flap.
	rc.HeartbeatTimeout = c.timeout
	rc.ElectionTimeout = c.timeout
	rc.LeaderLeaseTimeout = c.timeout / 2
	rc.CommitTimeout = 20 * time.Millisecond
	rc.TrailingLogs = 10 // so a user snapshot compacts the log and a lagging node needs InstallSnapshot
	rc.SnapshotThreshold = 1 << 20
	rc.SnapshotInterval = time.Hour
	rc.Logger = hclog.New(&hclog.LoggerOptions{
		Name: fmt.Sprintf("raft.%s.g%s", n.id, groupLabel(g)), Level: hclog.Warn, Output: c.lw, DisableTime: true,
	})
	return rc
}

// startRafts starts a replica of every group on n over its mux, first
// bootstrapping the group with conf when it is not nil.
func (c *muxTestCluster) startRafts(n *muxTestNode, conf *raft.Configuration) {
	c.t.Helper()
	for _, g := range c.groups {
		rep := n.replicas[g]
		tr, err := n.mux.Transport(g)
		if err != nil {
			c.t.Fatal(err)
		}
		if conf != nil {
			if err := raft.BootstrapCluster(c.raftConfig(n, g), rep.logs, rep.logs, rep.snaps, tr, *conf); err != nil {
				_ = tr.Close()
				c.t.Fatal(err)
			}
		}
		rep.fsm = &countFSM{}
		rep.r, err = raft.NewRaft(c.raftConfig(n, g), rep.fsm, rep.logs, rep.logs, rep.snaps, tr)
		if err != nil {
			_ = tr.Close()
			c.t.Fatal(err)
		}
	}
	n.up = true
}

// stopNode closes the node's mux first, as a crash would cut its network, then
// shuts its rafts down.
func (c *muxTestCluster) stopNode(n *muxTestNode) {
	if !n.up {
		return
	}
	n.up = false
	_ = n.mux.Close()
	var wg sync.WaitGroup
	for _, rep := range n.replicas {
		if rep.r != nil {
			wg.Go(func() { _ = rep.r.Shutdown().Error() })
		}
	}
	wg.Wait()
}

func (c *muxTestCluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { c.stopNode(n) })
	}
	wg.Wait()
}

func (c *muxTestCluster) live() []*muxTestNode {
	var out []*muxTestNode
	for _, n := range c.nodes {
		if n.up {
			out = append(out, n)
		}
	}
	return out
}

// leader waits until a live node leads g and returns it.
func (c *muxTestCluster) leader(g uint32) *muxTestNode {
	c.t.Helper()
	var l *muxTestNode
	testkit.Poll{Timeout: 10 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(c.t, "condition", func() error {
		var best uint64
		l = nil
		for _, n := range c.live() {
			r := n.replicas[g].r
			if r.State() == raft.Leader && r.CurrentTerm() >= best {
				l, best = n, r.CurrentTerm()
			}
		}
		if l == nil {
			return fmt.Errorf("group %s has no leader", groupLabel(g))
		}
		return nil
	})
	return l
}

// apply commits the values to g in order, retrying the ones that fail over a
// leader change. A retried value may end up applied twice; every replica
// still applies the same sequence, which is what the test checks.
func (c *muxTestCluster) apply(g uint32, vals []string) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(vals) > 0 {
		if time.Now().After(deadline) {
			c.t.Fatalf("group %s: could not apply %d values", groupLabel(g), len(vals))
		}
		r := c.leader(g).replicas[g].r
		futs := make([]raft.ApplyFuture, len(vals))
		for i, v := range vals {
			futs[i] = r.Apply([]byte(v), 5*time.Second)
		}
		var failed []string
		for i, f := range futs {
			if err := f.Error(); err != nil {
				failed = append(failed, vals[i])
			}
		}
		vals = failed
	}
}

func muxVals(g uint32, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("g%s-%d", groupLabel(g), i))
	}
	return out
}

// converged waits until every live replica of g applied the same sequence
// and it holds every value of want.
func (c *muxTestCluster) converged(g uint32, want []string, nodes []*muxTestNode) {
	c.t.Helper()
	testkit.Poll{Timeout: 15 * time.Second, Every: 25 * time.Millisecond}.EventuallyNil(c.t, "condition", func() error {
		ref := nodes[0].replicas[g].fsm.snapshot()
		for _, n := range nodes[1:] {
			if got := n.replicas[g].fsm.snapshot(); !slices.Equal(got, ref) {
				return fmt.Errorf("group %s: %s applied %d entries, %s applied %d (or a different order)",
					groupLabel(g), nodes[0].id, len(ref), n.id, len(got))
			}
		}
		have := make(map[string]bool, len(ref))
		for _, v := range ref {
			have[v] = true
		}
		for _, v := range want {
			if !have[v] {
				return fmt.Errorf("group %s: %q not applied (%d entries)", groupLabel(g), v, len(ref))
			}
		}
		return nil
	})
}

// forGroups runs f for each group in turn (on the test goroutine, so f may
// call t.Fatal).
func (c *muxTestCluster) forGroups(f func(g uint32)) {
	for _, g := range c.groups {
		f(g)
	}
}

// groupPair is two muxes on loopback, each with a transport of group g; the
// transports are closed when the test ends (closing one earlier is fine).
func groupPair(t *testing.T, g uint32) (ma, mb *Mux, ta, tb *GroupTransport) {
	t.Helper()
	lw := newMuxTestLog(t)
	ma = listenTestMux(t, "127.0.0.1:0", lw)
	mb = listenTestMux(t, "127.0.0.1:0", lw)
	var err error
	if ta, err = ma.Transport(g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ta.Close() })
	if tb, err = mb.Transport(g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })
	return ma, mb, ta, tb
}
