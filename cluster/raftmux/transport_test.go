package raftmux

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/internal/testkit"
)

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
		testkit.Poll{Timeout: 10 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
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
	testkit.Poll{Timeout: 10 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
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
	testkit.Consistently(t, time.Second, fmt.Sprintf("partitioned %s never leads", victim.id), func() (bool, string) {
		for _, g := range groups {
			if victim.replicas[g].r.State() == raft.Leader {
				return false, fmt.Sprintf("group %d: it became leader", g)
			}
		}
		return true, ""
	})
	for _, g := range groups {
		if _, ok := rejected.Load(g); !ok {
			t.Errorf("group %d: the dial filter was never consulted", g)
		}
	}

	// Heal: the victim can lead and replicate again.
	victim.mux.SetDialFilter(nil)
	phase = time.Now()
	c.forGroups(func(g uint32) {
		testkit.Poll{Timeout: 10 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
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

func TestMuxTransportLifecycle(t *testing.T) {
	muxLeakCheck(t)
	const g = 5
	_, mb, ta, tb := groupPair(t, g)
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
	testkit.Poll{Timeout: 5 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(t, "condition", func() error {
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
	testkit.Poll{Timeout: 5 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(t, "condition", func() error { return muxRPC(ta, tb2) })

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

// A group's transport offers no append pipeline, so Raft replicates with one
// AppendEntries in flight per follower. hashicorp/raft's pipeline with its
// default two in flight can deadlock: when a follower answers Success=false
// the decoder returns and nobody reads the pipeline's done channel, the send
// loop may pick a ready trigger over the closed finish channel and park on
// the unbuffered in-progress channel, and the pipeline is closed only when
// that loop returns. The follower then gets heartbeats but never another
// entry, and Shutdown waits forever (CI hung 19 minutes in stopAll on it).
func TestMuxTransportOffersNoPipeline(t *testing.T) {
	muxLeakCheck(t)
	_, _, ta, tb := groupPair(t, 7)
	p, err := ta.AppendEntriesPipeline("b", tb.LocalAddr())
	if p != nil {
		_ = p.Close()
	}
	if !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want ErrPipelineReplicationNotSupported", err)
	}
}
