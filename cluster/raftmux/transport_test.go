package raftmux

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/rhizon/rhizon/internal/testcerts"
)

// checkFor polls f every `every` until it returns nil, failing the test with
// f's last error once total has passed.
func checkFor(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", total, err)
		}
		time.Sleep(every)
	}
}

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
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
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
}

// newMuxTestCluster starts 3 nodes, each with one mux, and one 3-voter Raft
// group per entry of groups across them.
func newMuxTestCluster(t *testing.T, groups []uint32) *muxTestCluster {
	c := &muxTestCluster{t: t, lw: newMuxTestLog(t), groups: groups}
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
	rc.HeartbeatTimeout = 200 * time.Millisecond
	rc.ElectionTimeout = 200 * time.Millisecond
	rc.LeaderLeaseTimeout = 100 * time.Millisecond
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
	checkFor(c.t, 10*time.Second, 20*time.Millisecond, func() error {
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
	checkFor(c.t, 15*time.Second, 25*time.Millisecond, func() error {
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

// TestMuxRaftClusters runs 5 Raft groups (4 shards and the control group) of
// 3 voters over 3 muxes: replication, losing a node, and the node coming back
// on the same address and catching up (by snapshot install over the mux).
func TestMuxRaftClusters(t *testing.T) {
	muxLeakCheck(t)
	start := time.Now()
	groups := []uint32{0, 1, 2, 3, ControlGroup}
	c := newMuxTestCluster(t, groups)
	want := map[uint32][]string{}
	addWant := func(g uint32, v []string) { want[g] = append(want[g], v...) }

	c.forGroups(func(g uint32) { c.leader(g) })
	t.Logf("leaders elected after %v", time.Since(start))

	phase := time.Now()
	c.forGroups(func(g uint32) {
		v := muxVals(g, 0, 100)
		c.apply(g, v)
		addWant(g, v)
	})
	for _, g := range groups {
		c.converged(g, want[g], c.nodes)
	}
	t.Logf("100 entries x 5 groups applied and replicated in %v", time.Since(phase))

	// Take down a node that leads at least one group, so both a leader and
	// followers are lost somewhere.
	phase = time.Now()
	down := c.leader(groups[0])
	c.stopNode(down)
	rest := c.live()
	c.forGroups(func(g uint32) {
		l := c.leader(g)
		if l == down {
			t.Errorf("group %s: stopped node still leads", groupLabel(g))
		}
		v := muxVals(g, 100, 150)
		c.apply(g, v)
		addWant(g, v)
	})
	for _, g := range groups {
		c.converged(g, want[g], rest)
	}
	t.Logf("%s down: re-elected and applied 50 more per group in %v", down.id, time.Since(phase))

	// Compact the survivors' logs past what the stopped node has, so it can
	// only catch up through InstallSnapshot, which streams over a fresh mux
	// connection.
	c.forGroups(func(g uint32) {
		for _, n := range rest {
			if err := n.replicas[g].r.Snapshot().Error(); err != nil {
				t.Errorf("group %s: snapshot on %s: %v", groupLabel(g), n.id, err)
			}
		}
		v := muxVals(g, 150, 170)
		c.apply(g, v)
		addWant(g, v)
	})

	phase = time.Now()
	down.mux = listenTestMux(t, down.addr, c.lw)
	if string(down.mux.Addr()) != down.addr {
		t.Fatalf("restarted mux on %s, want %s", down.mux.Addr(), down.addr)
	}
	c.startRafts(down, nil)
	for _, g := range groups {
		c.converged(g, want[g], c.nodes)
	}
	t.Logf("%s restarted on the same address and caught up in %v", down.id, time.Since(phase))
	for _, g := range groups {
		// Its log was compacted away on the others, so it must have caught
		// up through a snapshot streamed over the mux.
		if list, err := down.replicas[g].snaps.List(); err != nil || len(list) == 0 {
			t.Errorf("group %s: %s caught up without installing a snapshot (%v)", groupLabel(g), down.id, err)
		}
	}

	// A replica removed from a running node and added back: raft.Shutdown
	// closes its transport, which must free the group id on the mux at once.
	phase = time.Now()
	moved := c.nodes[(slices.Index(c.nodes, down)+1)%len(c.nodes)]
	rep := moved.replicas[groups[1]]
	if err := rep.r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	tr, err := moved.mux.Transport(groups[1])
	if err != nil {
		t.Fatalf("re-register group after raft shutdown: %v", err)
	}
	rep.fsm = &countFSM{}
	if rep.r, err = raft.NewRaft(c.raftConfig(moved, groups[1]), rep.fsm, rep.logs, rep.logs, rep.snaps, tr); err != nil {
		_ = tr.Close()
		t.Fatal(err)
	}
	c.converged(groups[1], want[groups[1]], c.nodes)
	t.Logf("group %s replica on %s removed and re-added in %v", groupLabel(groups[1]), moved.id, time.Since(phase))

	// And it takes part again: writes after the catch-up reach it too.
	c.forGroups(func(g uint32) {
		v := muxVals(g, 170, 180)
		c.apply(g, v)
		addWant(g, v)
	})
	for _, g := range groups {
		c.converged(g, want[g], c.nodes)
	}
	t.Logf("total %v", time.Since(start))
}

// TestMuxDialFilterPartition cuts one node's outbound Raft traffic: it loses
// the leadership it had and cannot regain any while partitioned; the other
// two carry on. Clearing the filter heals it.
func TestMuxDialFilterPartition(t *testing.T) {
	muxLeakCheck(t)
	start := time.Now()
	groups := []uint32{1, 2, 3}
	c := newMuxTestCluster(t, groups)
	victim := c.nodes[0]
	// Make the victim lead every group so the partition must take
	// leadership away from it.
	c.forGroups(func(g uint32) {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			l := c.leader(g)
			if l == victim {
				return nil
			}
			_ = l.replicas[g].r.LeadershipTransferToServer(victim.id, raft.ServerAddress(victim.addr)).Error()
			return fmt.Errorf("group %d: %s leads, not %s", g, l.id, victim.id)
		})
	})
	c.forGroups(func(g uint32) { c.apply(g, muxVals(g, 0, 10)) })

	errPartition := errors.New("partitioned")
	var rejected sync.Map
	victim.mux.SetDialFilter(func(g uint32, addr string) error {
		rejected.Store(g, true)
		return errPartition
	})
	phase := time.Now()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, g := range groups {
			if victim.replicas[g].r.State() == raft.Leader {
				return fmt.Errorf("group %d: %s still leads", g, victim.id)
			}
		}
		return nil
	})
	t.Logf("partitioned leader stepped down in all groups after %v", time.Since(phase))
	c.forGroups(func(g uint32) { c.apply(g, muxVals(g, 10, 20)) })
	// For several election timeouts the victim never leads (it cannot send
	// a vote request), while the others keep a leader.
	until := time.Now().Add(time.Second)
	for time.Now().Before(until) {
		for _, g := range groups {
			if victim.replicas[g].r.State() == raft.Leader {
				t.Fatalf("group %d: partitioned %s became leader", g, victim.id)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, g := range groups {
		if _, ok := rejected.Load(g); !ok {
			t.Errorf("group %d: the dial filter was never consulted", g)
		}
	}

	// Heal: the victim can lead and replicate again.
	victim.mux.SetDialFilter(nil)
	phase = time.Now()
	c.forGroups(func(g uint32) {
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			l := c.leader(g)
			if l == victim {
				return nil
			}
			_ = l.replicas[g].r.LeadershipTransferToServer(victim.id, raft.ServerAddress(victim.addr)).Error()
			return fmt.Errorf("group %d: %s leads, not %s", g, l.id, victim.id)
		})
		if err := victim.replicas[g].r.Apply([]byte("after-heal"), 5*time.Second).Error(); err != nil {
			t.Errorf("group %d: apply on healed leader: %v", g, err)
		}
	})
	for _, g := range groups {
		c.converged(g, []string{"after-heal"}, c.nodes)
	}
	t.Logf("healed; %s leads all groups again after %v (total %v)", victim.id, time.Since(phase), time.Since(start))
}

// muxLayerOf registers a bare layer (no NetworkTransport) so a test can see
// exactly which connections reach a group.
func muxLayerOf(t *testing.T, m *Mux, g uint32) *muxLayer {
	t.Helper()
	l, err := m.register(g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func muxHeader(magic0, magic1, version byte, g uint32) []byte {
	h := []byte{magic0, magic1, version, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[3:], g)
	return h
}

// expectClosedByPeer fails unless the other end closes c within d.
func expectClosedByPeer(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("connection still open after %v", d)
	default:
		t.Fatalf("read: %v, want the peer to close", err)
	}
}

// expectAccepted fails unless l yields a conn within d and returns it.
func expectAccepted(t *testing.T, l *muxLayer, d time.Duration) net.Conn {
	t.Helper()
	select {
	case c := <-l.acceptCh:
		return c
	case <-time.After(d):
		t.Fatal("no connection reached the group")
		return nil
	}
}

func expectNothingAccepted(t *testing.T, l *muxLayer) {
	t.Helper()
	select {
	case c := <-l.acceptCh:
		t.Fatalf("connection from %s reached the group", c.RemoteAddr())
	default:
	}
}

// dialAndPing dials srv's group through out, takes the connection from in
// and checks that bytes written right after the handshake arrive whole (the
// handshake must not eat them). Both ends are closed at the end of the test.
func dialAndPing(t *testing.T, out *muxLayer, srv *Mux, in *muxLayer) (client, server net.Conn) {
	t.Helper()
	c, err := out.Dial(srv.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sc := expectAccepted(t, in, 2*time.Second)
	t.Cleanup(func() { _ = sc.Close() })
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
	return c, sc
}

func TestMuxHandshake(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	srv := listenTestMux(t, "127.0.0.1:0", lw)
	cli := listenTestMux(t, "127.0.0.1:0", lw)
	const g = 7
	in := muxLayerOf(t, srv, g)
	out := muxLayerOf(t, cli, g)

	dialRaw := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", string(srv.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	t.Run("routes to the group and passes bytes through", func(t *testing.T) {
		c, sc := dialAndPing(t, out, srv, in)
		if sc.(*muxConn).dialed || !c.(*muxConn).dialed {
			t.Fatal("conn roles mixed up")
		}
	})
	t.Run("bad magic is closed", func(t *testing.T) {
		c := dialRaw(t)
		if _, err := c.Write(muxHeader('G', 'E', muxVersion, g)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("bad version is closed", func(t *testing.T) {
		c := dialRaw(t)
		if _, err := c.Write(muxHeader(muxMagic0, muxMagic1, 9, g)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("unknown group is closed", func(t *testing.T) {
		c, err := out.m.dialMux(context.Background(), string(srv.Addr()), 99, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("an unauthenticated version 1 header is closed", func(t *testing.T) {
		c := dialRaw(t)
		if _, err := c.Write(muxHeader(muxMagic0, muxMagic1, 1, g)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("a wrong answer to the challenge is closed", func(t *testing.T) {
		c := dialRaw(t)
		hdr := muxHeader(muxMagic0, muxMagic1, muxVersion, g)
		if _, err := c.Write(append(hdr, make([]byte, muxNonceSize)...)); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, muxNonceSize+muxMACSize)
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatal(err)
		}
		// The answer computed with another secret.
		bad := muxMAC(muxKey("not-the-secret"), 'D', hdr, make([]byte, muxNonceSize), reply[:muxNonceSize])
		if _, err := c.Write(append(bad, "raft bytes"...)); err != nil {
			t.Fatal(err)
		}
		expectClosedByPeer(t, c, 2*time.Second)
		expectNothingAccepted(t, in)
	})
	t.Run("a mux with another secret can neither dial nor be dialed", func(t *testing.T) {
		other, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: "not-the-secret", HandshakeTimeout: 500 * time.Millisecond, Logger: lw.slog()})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if c, err := other.dialMux(context.Background(), string(srv.Addr()), g, time.Second); err == nil {
			c.Close()
			t.Fatal("a mux with another secret connected")
		} else if !errors.Is(err, errMuxAuth) {
			t.Fatalf("dial with another secret: %v, want %v", err, errMuxAuth)
		}
		expectNothingAccepted(t, in)
		if c, err := out.m.dialMux(context.Background(), string(other.Addr()), g, time.Second); err == nil {
			c.Close()
			t.Fatal("connected to a mux with another secret")
		}
	})
	t.Run("silent conn times out without blocking others", func(t *testing.T) {
		began := time.Now()
		silent := dialRaw(t)
		half := dialRaw(t)
		if _, err := half.Write([]byte{muxMagic0, muxMagic1}); err != nil {
			t.Fatal(err)
		}
		// Meanwhile a proper connection goes straight through.
		c, err := out.Dial(srv.Addr(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc := expectAccepted(t, in, 300*time.Millisecond)
		sc.Close()
		expectClosedByPeer(t, silent, 3*time.Second)
		expectClosedByPeer(t, half, 3*time.Second)
		if d := time.Since(began); d < 400*time.Millisecond {
			t.Fatalf("closed after %v, before the 500ms handshake timeout", d)
		}
	})
	t.Run("full backlog drops the excess", func(t *testing.T) {
		const full = 9
		slow := muxLayerOf(t, srv, full) // nobody calls Accept
		var conns []net.Conn
		for range muxAcceptBacklog + 1 {
			c, err := out.m.registeredLayerDial(full, srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
		// One of them cannot be delivered and is closed after the
		// handshake timeout; the backlog holds the rest.
		checkFor(t, 3*time.Second, 10*time.Millisecond, func() error {
			if n := len(slow.acceptCh); n != muxAcceptBacklog {
				return fmt.Errorf("backlog %d", n)
			}
			return nil
		})
		// Past the handshake timeout exactly one conn is closed by the
		// server; a short read deadline tells open (timeout) from closed.
		closed := 0
		checkFor(t, 3*time.Second, 50*time.Millisecond, func() error {
			closed = 0
			for _, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
				var b [1]byte
				if _, err := c.Read(b[:]); err != nil && !isTimeout(err) {
					closed++
				}
			}
			if closed == 0 {
				return errors.New("no conn closed yet")
			}
			return nil
		})
		if closed != 1 {
			t.Fatalf("%d conns closed, want 1", closed)
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// registeredLayerDial dials group g of addr through a throwaway layer of m
// (the dialer's own registration of g is irrelevant to the peer).
func (m *Mux) registeredLayerDial(g uint32, addr raft.ServerAddress) (net.Conn, error) {
	l := &muxLayer{m: m, group: g, done: make(chan struct{}), ctx: m.ctx, cancel: func() {}, conns: map[*muxConn]struct{}{}}
	return l.Dial(addr, time.Second)
}

// muxRPC sends a RequestVote from a to b's transport of group g and answers
// it on b's side; it reports the RPC's error.
func muxRPC(a, b *GroupTransport) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case rpc := <-b.Consumer():
			rpc.Respond(&raft.RequestVoteResponse{Granted: true}, nil)
		case <-done:
		}
	}()
	var resp raft.RequestVoteResponse
	err := a.RequestVote("b", b.LocalAddr(), &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{Addr: []byte(a.LocalAddr())}, Term: 1}, &resp)
	if err == nil && !resp.Granted {
		err = errors.New("vote not granted")
	}
	return err
}

func TestMuxTransportLifecycle(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	ma := listenTestMux(t, "127.0.0.1:0", lw)
	mb := listenTestMux(t, "127.0.0.1:0", lw)
	const g = 5

	ta, err := ma.Transport(g)
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	tb, err := mb.Transport(g)
	if err != nil {
		t.Fatal(err)
	}
	if tb.LocalAddr() != mb.Addr() {
		t.Fatalf("LocalAddr %s, want %s", tb.LocalAddr(), mb.Addr())
	}
	if _, err := mb.Transport(g); err == nil {
		t.Fatal("second Transport for the same group succeeded")
	}
	// The control group and other groups coexist on the same listener.
	tc, err := mb.Transport(ControlGroup)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := muxRPC(ta, tb); err != nil {
		t.Fatalf("rpc: %v", err)
	}

	// Closing the group's transport unregisters it: the peer's RPCs now
	// fail, and its connections are closed.
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if err := muxRPC(ta, tb); err == nil {
			return errors.New("rpc to a closed group succeeded")
		}
		return nil
	})

	tb2, err := mb.Transport(g)
	if err != nil {
		t.Fatalf("re-register after close: %v", err)
	}
	defer tb2.Close()
	// The pooled conn from before may be dead; raft would just retry.
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error { return muxRPC(ta, tb2) })

	if err := mb.Close(); err != nil {
		t.Fatal(err)
	}
	if !tb2.IsShutdown() || !tc.IsShutdown() {
		t.Fatal("mux Close left a group transport open")
	}
	if _, err := mb.Transport(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Transport after Close: %v", err)
	}
	if err := mb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMuxDialFilterUnit(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	ma := listenTestMux(t, "127.0.0.1:0", lw)
	mb := listenTestMux(t, "127.0.0.1:0", lw)
	ta1, _ := ma.Transport(1)
	ta2, _ := ma.Transport(2)
	tb1, _ := mb.Transport(1)
	tb2, _ := mb.Transport(2)
	for _, tr := range []*GroupTransport{ta1, ta2, tb1, tb2} {
		defer tr.Close()
	}
	if err := muxRPC(ta1, tb1); err != nil {
		t.Fatal(err)
	}
	// Cut group 1 only; its pooled connection is closed too.
	boom := errors.New("boom")
	ma.SetDialFilter(func(g uint32, addr string) error {
		if g == 1 && addr == string(mb.Addr()) {
			return boom
		}
		return nil
	})
	for range 3 {
		if err := muxRPC(ta1, tb1); !errors.Is(err, boom) {
			t.Fatalf("group 1 rpc under filter: %v, want %v", err, boom)
		}
	}
	if err := muxRPC(ta2, tb2); err != nil {
		t.Fatalf("group 2 rpc: %v", err)
	}
	// The other direction is not filtered.
	if err := muxRPC(tb1, ta1); err != nil {
		t.Fatalf("inbound rpc: %v", err)
	}
	ma.SetDialFilter(nil)
	if err := muxRPC(ta1, tb1); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

func TestMuxAdvertise(t *testing.T) {
	muxLeakCheck(t)
	if _, err := Listen(Config{BindAddr: "0.0.0.0:0", Secret: testMuxSecret}); err == nil || !strings.Contains(err.Error(), "advertise") {
		t.Fatalf("wildcard bind without advertise: %v", err)
	}
	for _, adv := range []string{"0.0.0.0:7000", "[::]:7000", "10.0.0.1:0", "nohostport"} {
		if _, err := Listen(Config{BindAddr: "127.0.0.1:0", AdvertiseAddr: adv, Secret: testMuxSecret}); err == nil {
			t.Errorf("advertise %q accepted", adv)
		}
	}
	if _, err := Listen(Config{BindAddr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "Secret") {
		t.Fatalf("a mux without the cluster secret: %v", err)
	}
	m, err := Listen(Config{BindAddr: "0.0.0.0:0", AdvertiseAddr: "node1.example:7000", Secret: testMuxSecret})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Addr() != "node1.example:7000" {
		t.Fatalf("Addr %s", m.Addr())
	}
	tr, err := m.Transport(3)
	if err != nil {
		t.Fatal(err)
	}
	if tr.LocalAddr() != "node1.example:7000" {
		t.Fatalf("transport LocalAddr %s", tr.LocalAddr())
	}
}

// During a rolling upgrade (AcceptUnauthenticated) a mux takes the version 1
// header of an older node and, after an older node closed on version 2,
// dials it with version 1; without the option it does neither.
func TestMuxUnauthenticatedPeersOnlyWhenAllowed(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	const g = 5
	m, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: testMuxSecret, AcceptUnauthenticated: true,
		HandshakeTimeout: 500 * time.Millisecond, Logger: lw.slog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	in := muxLayerOf(t, m, g)
	c, err := net.Dial("tcp", string(m.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(muxHeader(muxMagic0, muxMagic1, muxVersionUnauthenticated, g)); err != nil {
		t.Fatal(err)
	}
	expectAccepted(t, in, 2*time.Second).Close()

	// An older node's acceptor: it reads the header and keeps only
	// version 1 connections.
	old, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	versions := make(chan byte, 4)
	kept := make(chan net.Conn, 4)
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = old.Close()
		<-done
		for len(kept) > 0 {
			_ = (<-kept).Close()
		}
	})
	go func() {
		defer close(done)
		for {
			oc, err := old.Accept()
			if err != nil {
				return
			}
			hdr := make([]byte, muxHeaderSize)
			if _, err := io.ReadFull(oc, hdr); err == nil {
				versions <- hdr[2]
			}
			if hdr[2] != muxVersionUnauthenticated {
				_ = oc.Close()
				continue
			}
			kept <- oc
		}
	}()
	strict := listenTestMux(t, "127.0.0.1:0", lw)
	if _, err := strict.dialMux(context.Background(), old.Addr().String(), g, time.Second); err == nil {
		t.Fatal("a mux without the option connected to an older node")
	}
	if _, err := strict.dialMux(context.Background(), old.Addr().String(), g, time.Second); err == nil {
		t.Fatal("a mux without the option fell back to version 1")
	}
	if _, err := m.dialMux(context.Background(), old.Addr().String(), g, time.Second); !errors.Is(err, errMuxNoChallenge) {
		t.Fatalf("first dial of an older node: %v, want %v", err, errMuxNoChallenge)
	}
	oc, err := m.dialMux(context.Background(), old.Addr().String(), g, time.Second)
	if err != nil {
		t.Fatalf("second dial, in version 1: %v", err)
	}
	defer oc.Close()
	var got []byte
	for range 4 {
		got = append(got, <-versions)
	}
	if want := []byte{muxVersion, muxVersion, muxVersion, muxVersionUnauthenticated}; !bytes.Equal(got, want) {
		t.Fatalf("header versions the older node saw: %v, want %v", got, want)
	}
}

// With TLS, the mux's connections are TLS from their first byte: Raft bytes
// pass between two TLS muxes; a plaintext header, a mux without TLS and a
// mux that does not trust the peer's CA are refused.
func TestMuxTLS(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	certs := testcerts.Write(t)
	listen := func(cfg *tls.Config) *Mux {
		m, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: testMuxSecret, TLS: cfg,
			HandshakeTimeout: 500 * time.Millisecond, Logger: lw.slog()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	const g = 3
	srv := listen(testcerts.Config(t, certs, certs.CA))
	in := muxLayerOf(t, srv, g)
	cli := listen(testcerts.Config(t, certs, certs.CA))
	out := muxLayerOf(t, cli, g)

	_, sc := dialAndPing(t, out, srv, in)
	if _, ok := sc.(*muxConn).Conn.(*tls.Conn); !ok {
		t.Fatalf("accepted conn is %T, not TLS", sc.(*muxConn).Conn)
	}

	raw, err := net.Dial("tcp", string(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(append(muxHeader(muxMagic0, muxMagic1, muxVersion, g), make([]byte, muxNonceSize)...)); err != nil {
		t.Fatal(err)
	}
	expectClosedByPeer(t, raw, 2*time.Second)
	expectNothingAccepted(t, in)

	plain := listenTestMux(t, "127.0.0.1:0", lw)
	if pc, err := plain.dialMux(context.Background(), string(srv.Addr()), g, time.Second); err == nil {
		pc.Close()
		t.Fatal("a mux without TLS connected to a TLS mux")
	}
	untrusting := listen(testcerts.Config(t, certs, certs.OtherCA))
	if uc, err := untrusting.dialMux(context.Background(), string(srv.Addr()), g, time.Second); err == nil {
		uc.Close()
		t.Fatal("a mux connected to a peer whose certificate its CA did not sign")
	}
	expectNothingAccepted(t, in)
}

// Idle connections that never send a header cannot keep a peer out: when
// every handshake slot is taken, the oldest pending one gives way.
func TestMuxIdleConnectionsDoNotBlockPeers(t *testing.T) {
	muxLeakCheck(t)
	lw := newMuxTestLog(t)
	srv, err := Listen(Config{BindAddr: "127.0.0.1:0", Secret: testMuxSecret, Logger: lw.slog(),
		HandshakeTimeout: time.Minute, MaxPendingHandshakes: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	cli := listenTestMux(t, "127.0.0.1:0", lw)
	const g = 7
	in := muxLayerOf(t, srv, g)
	out := muxLayerOf(t, cli, g)
	for range 32 {
		c, err := net.Dial("tcp", string(srv.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		// One host holds at most a quarter of the slots: 2 of 8.
		if n, ev := len(srv.pending), srv.evicted.Load(); n < 2 || ev < 30 {
			return fmt.Errorf("%d pending handshakes, %d evicted; want 2 pending and 30 evicted", n, ev)
		}
		return nil
	})
	// Dials with a one-second timeout: it fails if the slots stay taken.
	dialAndPing(t, out, srv, in)
}
