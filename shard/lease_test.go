package shard_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

var leaseEntity = actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "lease"}

func write(t *testing.T, s *shard.Shard, n int) {
	t.Helper()
	res, err := s.Submit(ctx(t), add("lease", n))
	if err != nil || res.Status != actor.StatusAccepted {
		t.Fatalf("write %d: %v %+v", n, err, res)
	}
}

// reads does n linearizable reads on s and returns how many the lease
// confirmed and how many a heartbeat round did.
func reads(t *testing.T, s *shard.Shard, n int) (lease, round uint64) {
	t.Helper()
	l0, r0 := s.ReadCounts()
	for range n {
		if err := s.WaitLinearizable(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	l1, r1 := s.ReadCounts()
	return l1 - l0, r1 - r0
}

func TestLease_ReadsUnderLeaseDoNoHeartbeatRound(t *testing.T) {
	g := openGroup(t, nil)
	l := g.s[g.leader()]
	write(t, l, 1)
	// The first read of a term commits its barrier; the heartbeats that
	// follow give the leader its lease.
	testkit.Eventually(t, 10*time.Second, "a lease read", func() (bool, string) {
		n, _ := reads(t, l, 1)
		return n == 1, "read did a round"
	})
	lease, round := reads(t, l, 200)
	// Heartbeats renew the ~570 ms lease every 100-200 ms; a loaded
	// machine may delay one past it, so allow a few rounds.
	if lease < 190 || lease+round != 200 {
		t.Fatalf("200 reads under lease: %d by lease, %d by round", lease, round)
	}
}

func TestLease_OffEveryReadDoesTheRound(t *testing.T) {
	g := openGroup(t, func(c *shard.Config) { c.NoLeaseReads = true })
	l := g.s[g.leader()]
	write(t, l, 1)
	lease, round := reads(t, l, 50)
	if lease != 0 || round != 50 {
		t.Fatalf("50 reads with leases off: %d by lease, %d by round", lease, round)
	}
}

// readLog is what a reader on the old leader saw: each successful read,
// when it began and what it returned, and whether the lease confirmed it.
type readAt struct {
	start   time.Time
	version uint64
	leased  bool
}

// reader reads on a shard in a loop, recording each successful read.
type reader struct {
	mu   sync.Mutex
	got  []readAt
	wg   sync.WaitGroup
	stop chan struct{}
}

// leased is how many reads the lease confirmed so far.
func (r *reader) leased() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.got {
		if x.leased {
			n++
		}
	}
	return n
}

// done stops the loop and returns what it read.
func (r *reader) done() []readAt {
	close(r.stop)
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

// readLoop reads on s until done, once some reads went by lease.
func readLoop(t *testing.T, s *shard.Shard) *reader {
	rd := &reader{stop: make(chan struct{})}
	rd.wg.Add(1)
	defer testkit.Eventually(t, 10*time.Second, "lease reads in the loop", func() (bool, string) {
		return rd.leased() >= 10, "fewer than 10"
	})
	stop, mu, got, wg := rd.stop, &rd.mu, &rd.got, &rd.wg
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			l0, _ := s.ReadCounts()
			start := time.Now()
			c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := s.WaitLinearizable(c)
			cancel()
			if err != nil {
				continue
			}
			e, err := s.Store().Entity(leaseEntity)
			if err != nil {
				t.Error(err)
				return
			}
			l1, _ := s.ReadCounts()
			mu.Lock()
			*got = append(*got, readAt{start: start, version: e.Version, leased: l1 > l0})
			mu.Unlock()
		}
	}()
	return rd
}

func TestLease_CutOffLeaderStopsBeforeLeaseEndsAndNeverServesStale(t *testing.T) {
	const hb = 500 * time.Millisecond
	g := openGroup(t, func(c *shard.Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = hb, hb, hb
	})
	li := g.leader()
	old := g.s[li]
	write(t, old, 1)
	testkit.Eventually(t, 10*time.Second, "a lease read", func() (bool, string) {
		n, _ := reads(t, old, 1)
		return n == 1, "read did a round"
	})

	rd := readLoop(t, old)
	cut := time.Now()
	g.p.set(g.trans[li].LocalAddr(), true)
	ni := g.leader()
	write(t, g.s[ni], 2)
	acked := time.Now()
	testkit.Eventually(t, 10*time.Second, "the old leader to step down", func() (bool, string) {
		return !old.IsLeader(), "still leader"
	})
	got := rd.done()

	// Followers vote for no one before HeartbeatTimeout after their last
	// contact, by their clocks: the lease must end before that by ours.
	drift := shard.MaxClockDrift
	bound := time.Duration(float64(hb) / (1 + drift))
	leaseEnd := cut.Add(bound)
	var leased int
	for _, r := range got {
		if r.leased {
			leased++
			if !r.start.Before(leaseEnd) {
				t.Errorf("lease read began %v after the cut, past %v", r.start.Sub(cut), bound)
			}
		}
		if r.start.After(acked) && r.version < 2 {
			t.Errorf("stale read: began %v after the new leader acked version 2, returned version %d", r.start.Sub(acked), r.version)
		}
	}
	if leased == 0 {
		t.Fatalf("no lease read after the cut (%d reads): the test saw nothing", len(got))
	}
	t.Logf("%d reads on the old leader, %d by lease; new leader acked %v after the cut", len(got), leased, acked.Sub(cut))
}

func TestLease_TransferEndsTheLeaseBeforeTimeoutNow(t *testing.T) {
	g := openGroup(t, nil)
	li := g.leader()
	old := g.s[li]
	write(t, old, 1)
	testkit.Eventually(t, 10*time.Second, "a lease read", func() (bool, string) {
		n, _ := reads(t, old, 1)
		return n == 1, "read did a round"
	})
	rd := readLoop(t, old)
	if err := old.Raft().LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the old leader to step down", func() (bool, string) {
		return !old.IsLeader(), "still leader"
	})
	got := rd.done()
	sent := time.Unix(0, g.trans[li].timeoutNowAt.Load())
	if sent.IsZero() || g.trans[li].timeoutNowAt.Load() == 0 {
		t.Fatal("no TimeoutNow was sent")
	}
	var leased int
	for _, r := range got {
		if r.leased {
			leased++
			if r.start.After(sent) {
				t.Errorf("lease read began %v after TimeoutNow left", r.start.Sub(sent))
			}
		}
	}
	if leased == 0 {
		t.Fatalf("no lease read before the transfer (%d reads): the test saw nothing", len(got))
	}
}

func TestLease_RestartedVoterVotesForNoOneWithinTheLease(t *testing.T) {
	const hb = time.Second // openGroup's
	g := openGroup(t, nil)
	li := g.leader()
	old := g.s[li]
	a, b := (li+1)%3, (li+2)%3
	addr := func(i int) raft.ServerAddress { return g.trans[i].LocalAddr() }
	write(t, old, 1)
	// b loses the leader and campaigns; a alone keeps the lease going.
	g.p.cutLink(addr(li), addr(b))
	testkit.Eventually(t, 10*time.Second, "b to campaign", func() (bool, string) {
		return g.s[b].Raft().State() == raft.Candidate, g.s[b].Raft().State().String()
	})
	rd := readLoop(t, old)
	// The leader is cut off and a, which acked it a moment ago, restarts:
	// it must not give b the vote the lease counts on it to refuse.
	cut := time.Now()
	g.p.set(addr(li), true)
	g.restart(a)
	// Ask for a's vote at once, as b (its election timer would take up to
	// 2 s to), with a log as long as any: only the quiet rule refuses it.
	var (
		vote raft.RequestVoteResponse
		err  error
	)
	// The first call may find b's pooled connection to a's old transport.
	for range 5 {
		err = g.trans[b].NetworkTransport.RequestVote(raft.ServerID(g.cfgs[a].NodeID), addr(a), &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(g.cfgs[b].NodeID), Addr: []byte(addr(b))},
			Term:      g.s[a].Raft().CurrentTerm() + 10, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40,
		}, &vote)
		if err == nil || strings.Contains(err.Error(), "no votes yet") {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "no votes yet") {
		t.Errorf("a voter restarted %v ago: vote err %v, granted %v; want refused as quiet", time.Since(cut), err, vote.Granted)
	}
	var elected time.Time
	testkit.Eventually(t, 20*time.Second, "a new leader", func() (bool, string) {
		if g.s[a].IsLeader() || g.s[b].IsLeader() {
			elected = time.Now()
			return true, ""
		}
		return false, "none"
	})
	ni := a
	if g.s[b].IsLeader() {
		ni = b
	}
	write(t, g.s[ni], 2)
	acked := time.Now()
	testkit.Eventually(t, 10*time.Second, "the old leader to step down", func() (bool, string) {
		return !old.IsLeader(), "still leader"
	})
	got := rd.done()

	drift := shard.MaxClockDrift
	if bound := time.Duration(float64(hb) / (1 + drift)); elected.Sub(cut) < bound {
		t.Errorf("a new leader %v after the cut, within %v: the restarted voter voted", elected.Sub(cut), bound)
	}
	for _, r := range got {
		if r.leased && r.start.After(elected) {
			t.Errorf("lease read began %v after a new leader was seen", r.start.Sub(elected))
		}
		if r.start.After(acked) && r.version < 2 {
			t.Errorf("stale read: began %v after the new leader acked version 2, returned version %d", r.start.Sub(acked), r.version)
		}
	}
	t.Logf("new leader %v after the cut and restart", elected.Sub(cut))
}
