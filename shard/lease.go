package shard

// Leader-lease reads.
//
// A linearizable read normally costs a heartbeat round (raft.VerifyLeader).
// The lease skips it while no other leader can exist. hashicorp/raft v1.8.0
// guarantees (raft.go, read for this): a follower refuses every vote while
// it knows a leader (requestVote checks LeaderWithID before anything else);
// it forgets the leader only when (a) its heartbeat timer finds no contact
// for HeartbeatTimeout on its own clock (runFollower; randomTimeout only
// lengthens that), (b) it receives TimeoutNow, from anyone, with no check
// of sender or term (timeoutNow), or (c) it restarts. It records the contact
// (setLastContact) at the end of every successful appendEntries, so after
// the leader sees a success for a request it sent at T, that follower votes
// for nobody before T + HeartbeatTimeout by the follower's clock. The leader
// itself votes only after leaving the Leader state. So while this replica is
// the leader of term t and a quorum of voters (counting itself) acked
// requests of term t sent at or after T, no other leader exists before
// T + HeartbeatTimeout/(1+MaxClockDrift), minus leaseMargin for safety.
//
// (b) and (c) need our help, and leaseTransport gives it:
//   - a leader marks its term lease-less before it sends TimeoutNow
//     (leadership transfer): from then on every read does the round;
//   - a replica answers TimeoutNow only from the leader it knows, so a
//     deposed leader cannot make a follower of the new one campaign with
//     the transfer flag that makes voters ignore their leader;
//   - a replica votes for no one during its first HeartbeatTimeout, as if
//     it had just heard from a leader: a voter that acked and restarted
//     stays bound. A fresh follower waits at least that long before its
//     first election anyway, so this costs restarts nothing.
//
// Acks are counted from heartbeats and non-pipelined appends (both go
// through Transport.AppendEntries). Heartbeats go every HeartbeatTimeout/10
// to /5 whatever the load, so the lease is renewed long before it ends;
// pipelined appends are not counted, which only makes the lease shorter.

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// MaxClockDrift is the bound on clock rates the lease relies on: over one
// HeartbeatTimeout no node's monotonic clock runs more than 1+MaxClockDrift
// times as fast as another's. Quartz drifts about 1e-4 and NTP slews at most
// 5e-4, so 0.5 leaves three orders of magnitude for misbehaving timers and
// steal time. A clock that stops (a suspended host or VM) is outside it:
// turn lease reads off where nodes may be suspended.
const MaxClockDrift = 0.5

// leaseMargin is the share of HeartbeatTimeout taken off the lease besides
// the drift bound, for timer and scheduling slop.
const leaseMargin = 0.1

// leaseFor is the lease a quorum ack buys, for a group whose followers use
// heartbeatTimeout.
func leaseFor(heartbeatTimeout time.Duration) time.Duration {
	return time.Duration(float64(heartbeatTimeout)/(1+MaxClockDrift) - leaseMargin*float64(heartbeatTimeout))
}

// errVoteQuiet refuses a vote during a replica's first HeartbeatTimeout.
var errVoteQuiet = errors.New("shard: replica started less than a heartbeat timeout ago: no votes yet")

// errTimeoutNowNotLeader refuses a TimeoutNow from a server that is not the
// known leader.
var errTimeoutNowNotLeader = errors.New("shard: TimeoutNow from a server that is not the known leader")

// lease tracks, for the current term, the newest send time of a successful
// append per peer. Safe for concurrent use.
type lease struct {
	dur time.Duration

	mu     sync.Mutex
	term   uint64
	sent   map[raft.ServerID]time.Time
	noTerm uint64 // a leadership transfer started in this term
}

func newLease(dur time.Duration) *lease {
	return &lease{dur: dur, sent: make(map[raft.ServerID]time.Time)}
}

// acked records a successful append of term sent at sent (monotonic).
func (l *lease) acked(id raft.ServerID, term uint64, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if term < l.term {
		return
	}
	if term > l.term {
		l.term = term
		clear(l.sent)
	}
	if sent.After(l.sent[id]) {
		l.sent[id] = sent
	}
}

// transferring ends the lease of term for good.
func (l *lease) transferring(term uint64) {
	l.mu.Lock()
	l.noTerm = max(l.noTerm, term)
	l.mu.Unlock()
}

// valid reports whether a leader of term, with the given voters, holds
// the lease at now: a quorum of voters (self counted as now) acked requests
// of term sent after now-dur.
func (l *lease) valid(term uint64, self raft.ServerID, voters []raft.ServerID, now time.Time) bool {
	if len(voters) == 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.noTerm >= term || l.term != term {
		return false
	}
	times := make([]time.Time, 0, len(voters))
	for _, v := range voters {
		if v == self {
			times = append(times, now)
		} else if t, ok := l.sent[v]; ok {
			times = append(times, t)
		}
	}
	quorum := len(voters)/2 + 1
	if len(times) < quorum {
		return false
	}
	// The quorum-th newest ack is the one the lease runs from.
	slices.SortFunc(times, func(a, b time.Time) int { return b.Compare(a) })
	return now.Before(times[quorum-1].Add(l.dur))
}

// leaseTransport wraps the transport a shard gives Raft: it records acks
// and transfers for the lease and applies the receiving rules of the file
// comment. Those rules apply whether or not this replica serves lease
// reads, because its peers' leases depend on them.
type leaseTransport struct {
	raft.Transport
	lease *lease
	quiet time.Time // no votes before this (monotonic)
	// node is set once Raft runs: the filter asks it for the known leader
	// and TimeoutNow for the term.
	node atomic.Pointer[raft.Raft]

	once     sync.Once
	stopOnce sync.Once
	out      chan raft.RPC
	done     chan struct{}

	// beats guards Raft's heartbeat fast path against a closed shard:
	// handlers in flight hold it shared, stop takes it exclusively.
	beats   sync.RWMutex
	stopped bool
}

var (
	_ raft.Transport   = (*leaseTransport)(nil)
	_ raft.WithClose   = (*leaseTransport)(nil)
	_ raft.WithPreVote = (*leaseTransport)(nil)
)

func newLeaseTransport(t raft.Transport, l *lease, heartbeatTimeout time.Duration) *leaseTransport {
	return &leaseTransport{Transport: t, lease: l, quiet: time.Now().Add(heartbeatTimeout), done: make(chan struct{})}
}

// AppendEntries implements raft.Transport, noting a success as an ack sent
// before the call.
func (t *leaseTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	sent := time.Now()
	err := t.Transport.AppendEntries(id, target, req, resp)
	if err == nil && resp.Success && resp.Term == req.Term {
		t.lease.acked(id, req.Term, sent)
	}
	return err
}

// TimeoutNow implements raft.Transport: the target campaigns at once and the
// voters ignore this leader, so the lease of this term ends before it goes.
func (t *leaseTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if r := t.node.Load(); r != nil {
		t.lease.transferring(r.CurrentTerm())
	} else {
		t.lease.transferring(^uint64(0))
	}
	return t.Transport.TimeoutNow(id, target, args, resp)
}

// RequestPreVote implements raft.WithPreVote.
func (t *leaseTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	pv, ok := t.Transport.(raft.WithPreVote)
	if !ok {
		return errors.New("shard: transport does not support pre-vote")
	}
	return pv.RequestPreVote(id, target, args, resp)
}

// Consumer implements raft.Transport: RPCs pass through a filter that
// answers the refused votes and TimeoutNows itself.
func (t *leaseTransport) Consumer() <-chan raft.RPC {
	t.once.Do(func() {
		t.out = make(chan raft.RPC)
		go t.filter(t.Transport.Consumer())
	})
	return t.out
}

func (t *leaseTransport) filter(in <-chan raft.RPC) {
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case <-t.done:
			return
		}
		switch cmd := rpc.Command.(type) {
		case *raft.RequestVoteRequest:
			if time.Now().Before(t.quiet) {
				rpc.Respond(nil, errVoteQuiet)
				continue
			}
		case *raft.TimeoutNowRequest:
			r := t.node.Load()
			if r == nil || len(cmd.ID) == 0 {
				rpc.Respond(nil, errTimeoutNowNotLeader)
				continue
			}
			if _, leader := r.LeaderWithID(); leader != raft.ServerID(cmd.ID) {
				rpc.Respond(nil, errTimeoutNowNotLeader)
				continue
			}
		}
		select {
		case t.out <- rpc:
		case <-t.done:
			return
		}
	}
}

// Close implements raft.WithClose and stops the filter.
func (t *leaseTransport) Close() error {
	t.stop()
	if c, ok := t.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

// SetHeartbeatHandler implements raft.Transport. Raft's heartbeat fast path
// runs on the transport's goroutine and checks for shutdown only as it
// starts: a heartbeat that passed that check while the shard closed went on
// to write the term into a store its owner had closed once Close returned,
// and the write's failure panics (seen in CI). stop waits for such a call
// and refuses later ones.
func (t *leaseTransport) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		t.Transport.SetHeartbeatHandler(nil)
		return
	}
	t.Transport.SetHeartbeatHandler(func(rpc raft.RPC) {
		t.beats.RLock()
		defer t.beats.RUnlock()
		if t.stopped {
			rpc.Respond(nil, raft.ErrRaftShutdown)
			return
		}
		cb(rpc)
	})
}

// stop ends the filter and waits for heartbeat handlers in flight.
func (t *leaseTransport) stop() {
	t.stopOnce.Do(func() {
		close(t.done)
		t.beats.Lock()
		t.stopped = true
		t.beats.Unlock()
	})
}

// readCounts are a replica's linearizable reads by how leadership was
// confirmed.
type readCounts struct {
	lease, round atomic.Uint64
}

// ReadCounts returns how many linearizable reads this replica confirmed by
// its lease and how many by a heartbeat round.
func (s *Shard) ReadCounts() (lease, round uint64) {
	return s.reads.lease.Load(), s.reads.round.Load()
}

// leased reports whether this replica, leader of term since the caller
// checked, holds the lease now (and lease reads are on).
func (s *Shard) leased(term uint64) bool {
	if s.cfg.NoLeaseReads || s.lease == nil {
		return false
	}
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	servers := cf.Configuration().Servers
	voters := make([]raft.ServerID, 0, len(servers))
	for _, sv := range servers {
		if sv.Suffrage == raft.Voter {
			voters = append(voters, sv.ID)
		}
	}
	return s.raft.State() == raft.Leader && s.lease.valid(term, raft.ServerID(s.cfg.NodeID), voters, time.Now())
}
