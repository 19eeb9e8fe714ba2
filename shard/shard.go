// Package shard runs one Raft group around the deterministic engine: the
// proposer that group-commits commands into log entries and stamps logical
// time, the FSM that applies them, snapshots and log compaction, timer ticks,
// and linearizable or stale reads.
package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/logutil"
	"github.com/rhizon/rhizon/storage"
)

// Config configures one shard replica.
type Config struct {
	ID uint32
	// ShardCount is the cluster's shard count; the engine places audit
	// streams with it (engine.AuditAddress). 0 when unknown.
	ShardCount uint32
	// Members are the shards this Raft group carries (GroupOf), nil for
	// just ID: the group's store holds their rows under the group's prefix,
	// and the ingress worker consumes each one's subject.
	Members   []uint32
	NodeID    string // raft server id of this replica
	Registry  *actor.Registry
	StateDB   *storage.DB     // node-wide state store; the shard uses its prefix
	RaftDB    *storage.RaftDB // node-wide raft log and stable store
	Dir       string          // per-shard directory for raft snapshots
	Transport raft.Transport
	// Bootstrap, when the replica has no raft state, creates the group with
	// Peers as its voters (this node alone when empty).
	Bootstrap bool
	Peers     []raft.Server

	// Group commit: at most MaxBatch commands per entry, at most MaxInflight
	// entries proposed and not yet applied, QueueSize commands waiting (up
	// to twice that while tenants below their share still queue; see
	// fairQueue).
	MaxBatch    int
	MaxInflight int
	QueueSize   int
	// ProposeLinger is how long the proposer of a busy shard (its last entry
	// carried lingerAfter commands or more) waits for more commands before
	// it proposes an entry, unless lingerFill are queued already: 0 means
	// DefaultProposeLinger, negative never waits. See proposeLoop.
	ProposeLinger time.Duration
	// TickInterval is how often the leader checks for due timers.
	TickInterval time.Duration
	// ApplyTimeout bounds the wait for a proposal to be applied; past it the
	// outcome is unknown.
	ApplyTimeout time.Duration
	// HashCheckEvery is how many applied command entries pass between the
	// state hashes the leader proposes for every replica to compare
	// (divergence.go): 0 means DefaultCheckEvery, negative turns it off.
	HashCheckEvery int

	// NoLeaseReads makes every linearizable read confirm leadership with a
	// heartbeat round instead of relying on the leader lease (lease.go).
	NoLeaseReads bool

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64

	// Revisions, when set, returns the actor revisions the cluster has
	// switched to (actor type -> revision); the leader records them in
	// every entry it proposes (engine.Entry.Revisions).
	Revisions func() map[string]string

	// Retention maps a tenant to its idempotency window: the leader records
	// it in every entry it proposes (engine.Entry.Retention) and, while it
	// is not empty, proposes sweep entries that delete expired records
	// (retention.go), SweepRows rows examined per entry, a pass over the
	// shard's records every SweepInterval.
	Retention map[string]time.Duration
	// HistoryRetention maps a tenant to its history window: recorded in
	// every entry like Retention; the leader proposes history sweeps that
	// delete the tenant's events and rejections older than it, at or below
	// the last index it snapshotted (history_retention.go).
	HistoryRetention map[string]time.Duration
	SweepInterval    time.Duration
	SweepRows        int

	// Now is the wall clock the leader stamps entries from (injected so tests
	// can move it).
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if len(c.Members) == 0 {
		c.Members = []uint32{c.ID} // a group of one shard
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 1024
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 4
	}
	if c.QueueSize == 0 {
		c.QueueSize = 8192
	}
	def(&c.ProposeLinger, DefaultProposeLinger)
	def(&c.TickInterval, 100*time.Millisecond)
	def(&c.SweepInterval, time.Minute)
	if c.SweepRows <= 0 || c.SweepRows > engine.MaxSweepRows {
		c.SweepRows = 1024
	}
	def(&c.ApplyTimeout, 10*time.Second)
	def(&c.HeartbeatTimeout, time.Second)
	def(&c.ElectionTimeout, time.Second)
	def(&c.LeaderLeaseTimeout, 500*time.Millisecond)
	// How often (plus up to as much again) a leader with nothing new to
	// send tells each follower the commit index: an empty append per
	// follower and shard. Under load every append carries the commit index
	// anyway, and an idle follower only applies its last entry later, which
	// nothing waits for: callers get their results from the leader. Raft's
	// 50 ms default made an idle 3-node cluster of 64 shards spend a whole
	// core on empty appends; 5 ms, half a core with 8 shards.
	def(&c.CommitTimeout, 500*time.Millisecond)
	def(&c.SnapshotInterval, 2*time.Minute)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first missing or inconsistent setting.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("shard: NodeID is required")
	case c.Registry == nil:
		return errors.New("shard: Registry is required")
	case c.StateDB == nil || c.RaftDB == nil:
		return errors.New("shard: StateDB and RaftDB are required")
	case c.Dir == "":
		return errors.New("shard: Dir is required")
	case c.Transport == nil:
		return errors.New("shard: Transport is required")
	case c.MaxBatch > engine.MaxCommandsPerEntry:
		return fmt.Errorf("shard: MaxBatch %d exceeds the engine limit %d", c.MaxBatch, engine.MaxCommandsPerEntry)
	}
	return nil
}

// Shard is one replica of one shard.
type Shard struct {
	id    uint32
	cfg   Config
	raft  *raft.Raft
	fsm   *fsm
	store *storage.ShardStore
	// retention is Config.Retention as the log records it (retention.go).
	retention []*recordv1.TenantRetention
	log       *slog.Logger
	tracer    trace.Tracer
	metrics   *metrics

	queue    *fairQueue
	inflight chan struct{}
	stop     chan struct{}
	raftDown chan struct{} // closed once raft.Shutdown returned
	wg       sync.WaitGroup

	stampMu sync.Mutex
	lastAt  int64 // last logical time stamped by this replica as leader

	outboxWake chan struct{} // signalled after each applied entry (see Outboxed)
	carrier    relayCarrier  // the relay's position, for the next command entry
	checks     checker       // which entries carry the leader's state hash
	// appliedCh is closed and replaced after each applied entry: readers
	// waiting for an index wait on it instead of polling.
	appliedCh atomic.Pointer[chan struct{}]

	lease      *lease          // nil when the transport cannot be wrapped (no pre-vote)
	leaseTrans *leaseTransport // the transport Raft was given, when lease is set
	reads      readCounts

	readyTerm atomic.Uint64             // term in which this leader committed a barrier
	cmdCache  atomic.Pointer[[2]uint64] // last (commit index, newest command at or below it)
	closeOnce sync.Once
}

// Open starts the replica: it opens the engine over the shard's keyspace,
// starts Raft (bootstrapping a new group when asked), the proposer and the
// tick loop.
func Open(cfg Config) (*Shard, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("shard", cfg.ID)
	s := &Shard{
		id:        cfg.ID,
		cfg:       cfg,
		store:     cfg.StateDB.Shard(cfg.ID),
		retention: retentionRecord(cfg.Retention, cfg.HistoryRetention),
		log:       log,
		tracer:    otel.Tracer("github.com/rhizon/rhizon/shard"),
		queue:     newFairQueue(cfg.QueueSize),
		inflight:  make(chan struct{}, cfg.MaxInflight),
		stop:      make(chan struct{}),
		raftDown:  make(chan struct{}),

		outboxWake: make(chan struct{}, 1),
	}
	switch {
	case cfg.HashCheckEvery == 0:
		s.checks.every = DefaultCheckEvery
	case cfg.HashCheckEvery > 0:
		s.checks.every = uint64(cfg.HashCheckEvery)
	}
	first := make(chan struct{})
	s.appliedCh.Store(&first)
	m, err := newMetrics(cfg.ID)
	if err != nil {
		return nil, err
	}
	s.metrics = m

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	// The state store is on disk and remembers its applied index: restoring
	// the last snapshot on start would only replace it with older state.
	rc.NoSnapshotRestoreOnStart = true
	rc.Logger = logutil.HCLog(fmt.Sprintf("raft.shard%d", cfg.ID), log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.Dir, "snapshots"), 2, rc.Logger)
	if err != nil {
		return nil, fmt.Errorf("shard %d: snapshot store: %w", cfg.ID, err)
	}
	if err := s.recoverFromSnapshot(snaps); err != nil {
		return nil, err
	}
	if rebuilt, err := s.store.EnsureIndexes(cfg.Registry); err != nil {
		return nil, err
	} else if rebuilt {
		log.Info("document indexes rebuilt from the states for this node's declaration", "declaration", storage.IndexDeclaration(cfg.Registry))
	}
	eng, err := engine.New(cfg.ID, cfg.Registry, s.store, engine.WithShardCount(cfg.ShardCount))
	if err != nil {
		return nil, err
	}
	s.fsm = &fsm{s: s, eng: eng, store: s.store, db: cfg.StateDB, log: log}
	s.fsm.publishMeta()

	trans := cfg.Transport
	if _, ok := trans.(raft.WithPreVote); ok {
		s.lease = newLease(leaseFor(cfg.HeartbeatTimeout))
		s.leaseTrans = newLeaseTransport(trans, s.lease, cfg.HeartbeatTimeout)
		trans = s.leaseTrans
	}
	ls := cfg.RaftDB.Shard(cfg.ID)
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(ls, ls, snaps)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", cfg.ID, err)
		}
		if !has {
			peers := cfg.Peers
			if len(peers) == 0 {
				peers = []raft.Server{{ID: rc.LocalID, Address: cfg.Transport.LocalAddr()}}
			}
			if err := raft.BootstrapCluster(rc, ls, ls, snaps, cfg.Transport, raft.Configuration{Servers: peers}); err != nil {
				return nil, fmt.Errorf("shard %d: bootstrap: %w", cfg.ID, err)
			}
		}
	}
	r, err := raft.NewRaft(rc, s.fsm, ls, ls, snaps, trans)
	if err != nil {
		if s.leaseTrans != nil {
			s.leaseTrans.stop()
		}
		return nil, fmt.Errorf("shard %d: start raft: %w", cfg.ID, err)
	}
	s.raft = r
	if s.leaseTrans != nil {
		s.leaseTrans.node.Store(r)
	}
	s.wg.Add(3)
	go s.proposeLoop()
	go s.tickLoop()
	go s.sweepLoop()
	return s, nil
}

// recoverFromSnapshot restores the state store from the newest Raft snapshot
// when the store is behind it: a restore that did not finish, or state lost
// under the snapshot. Raft starts applying after the snapshot's index (we run
// with NoSnapshotRestoreOnStart), so a store below it would silently miss
// entries.
func (s *Shard) recoverFromSnapshot(snaps raft.SnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	newest := list[0]
	meta, err := s.store.Meta()
	if err == nil && meta.Index >= newest.Index {
		return nil
	}
	if err != nil && !errors.Is(err, storage.ErrRestoreIncomplete) {
		return fmt.Errorf("shard %d: read state meta: %w", s.id, err)
	}
	s.log.Warn("state store is behind the newest snapshot; restoring it", "applied", meta.Index, "snapshot", newest.Index, "err", err)
	_, rc, err := snaps.Open(newest.ID)
	if err != nil {
		return fmt.Errorf("shard %d: open snapshot %s: %w", s.id, newest.ID, err)
	}
	defer rc.Close()
	if err := s.store.Restore(rc); err != nil {
		return fmt.Errorf("shard %d: restore snapshot %s: %w", s.id, newest.ID, err)
	}
	return nil
}

// ID is the shard id: the Raft group's, which is also the id of the first
// shard it carries.
func (s *Shard) ID() uint32 { return s.id }

// Members is the shards this group carries, ascending (just ID when the
// cluster has as many groups as shards).
func (s *Shard) Members() []uint32 { return s.cfg.Members }

// ShardOf is the shard of addr, one of Members.
func (s *Shard) ShardOf(addr actor.Address) uint32 {
	if len(s.cfg.Members) <= 1 || s.cfg.ShardCount == 0 {
		return s.id
	}
	return Of(addr, s.cfg.ShardCount)
}

// Raft exposes the raft instance (for the cluster layer and tests).
func (s *Shard) Raft() *raft.Raft { return s.raft }

// IsLeader reports whether this replica leads the shard.
func (s *Shard) IsLeader() bool { return s.raft.State() == raft.Leader }

// Close stops the proposer and Raft. Waiting callers get ErrUnknownOutcome
// when their command was proposed, ErrClosed otherwise.
func (s *Shard) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		err = s.raft.Shutdown().Error()
		if s.leaseTrans != nil {
			s.leaseTrans.stop()
		}
		close(s.raftDown)
		s.wg.Wait()
		// Fail whatever is still queued.
		for _, r := range s.queue.pop(nil, s.queue.len()) {
			r.finish(outcome{err: ErrClosed})
		}
	})
	return err
}

// Meta is the last applied position and state hash of this replica.
func (s *Shard) Meta() engine.Meta { return *s.fsm.meta.Load() }

// Store is the shard's keyspace (reads only; the engine is its sole writer).
func (s *Shard) Store() *storage.ShardStore { return s.store }

// Status is one replica's Raft and apply position. The shard keeps its own
// type so that it links no API package; the cluster converts it.
type Status struct {
	Shard        uint32
	Role         string // Leader, Follower, Candidate or Shutdown
	Leader       string
	Term         uint64
	AppliedIndex uint64
	CommitIndex  uint64
	LastLogIndex uint64
	StateHash    string // hex, at AppliedIndex
	// Halted: the replica stopped applying after a store failure
	// (HaltError says which) and serves nothing until restarted.
	Halted    bool
	HaltError string
}

// Status reports this replica.
func (s *Shard) Status() Status {
	m := s.Meta()
	addr, id := s.raft.LeaderWithID()
	leader := string(id)
	if leader == "" {
		leader = string(addr)
	}
	return Status{
		Shard:        s.id,
		Role:         s.raft.State().String(),
		Leader:       leader,
		Term:         s.raft.CurrentTerm(),
		AppliedIndex: m.Index,
		CommitIndex:  s.raft.CommitIndex(),
		LastLogIndex: s.raft.LastIndex(),
		StateHash:    m.HashHex(),
		Halted:       s.fsm.halted.Load(),
		HaltError:    s.haltError(),
	}
}

// haltError is why the replica halted, "" while it runs.
func (s *Shard) haltError() string {
	if !s.fsm.halted.Load() {
		return ""
	}
	if e := s.fsm.haltErr.Load(); e != nil {
		return *e
	}
	return ErrHalted.Error()
}

// MissingRevision is the actor revision this replica waits for (it halted
// at an entry naming a revision its registry lacked), or nil. Once the
// registry has it (deployed at run time), closing and reopening the replica
// applies from that entry, as a restart would.
func (s *Shard) MissingRevision() *engine.MissingRevisionError {
	if !s.fsm.halted.Load() {
		return nil
	}
	return s.fsm.missing.Load()
}

// Halted is ErrHalted, wrapped with the cause, once the replica stopped
// applying after a store failure; nil while it runs. Its state is then
// unknown, so it must serve no read either.
func (s *Shard) Halted() error {
	if !s.fsm.halted.Load() {
		return nil
	}
	return fmt.Errorf("%w: shard %d: %s", ErrHalted, s.id, s.haltError())
}

// WaitLinearizable returns once this replica may serve a linearizable read:
// it makes sure an entry of its own term is committed (a Barrier, once per
// term), notes the commit index, confirms it still leads (under the leader
// lease, lease.go; otherwise a quorum answers its heartbeat), then waits
// until the state store has applied every command committed before the read
// began.
func (s *Shard) WaitLinearizable(ctx context.Context) error {
	if err := s.Halted(); err != nil {
		return err
	}
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	term := s.raft.CurrentTerm()
	if s.readyTerm.Load() != term {
		if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
			return mapRaftErr(err, false)
		}
		s.readyTerm.Store(term)
	}
	commit := s.raft.CommitIndex()
	if s.leased(term) {
		s.reads.lease.Add(1)
		s.metrics.read(true)
	} else {
		// A transport that holds heartbeats back to send them together
		// lets this round go at once.
		if h, ok := s.cfg.Transport.(interface{ Hurry() }); ok {
			h.Hurry()
		}
		if err := s.raft.VerifyLeader().Error(); err != nil {
			return mapRaftErr(err, false)
		}
		s.reads.round.Add(1)
		s.metrics.read(false)
	}
	need, err := s.lastCommandAtOrBelow(commit)
	if err != nil {
		return err
	}
	for {
		// Take the channel before reading the index: an apply in between
		// closes it, so the wait below cannot miss it.
		applied := s.appliedCh.Load()
		if s.Meta().Index >= need {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return ErrClosed
		case <-*applied:
		}
	}
}

// notifyApplied wakes every reader waiting for the applied index to move.
func (s *Shard) notifyApplied() {
	next := make(chan struct{})
	old := s.appliedCh.Swap(&next)
	close(*old)
}

// lastCommandAtOrBelow finds the newest command entry at or below index. The
// engine's applied index counts only command entries (no-ops, barriers and
// configuration changes never reach it), so that is what a read waits for.
// Entries compacted away are covered by a snapshot and therefore applied.
func (s *Shard) lastCommandAtOrBelow(index uint64) (uint64, error) {
	if c := s.cmdCache.Load(); c != nil && c[0] == index {
		return c[1], nil
	}
	ls := s.cfg.RaftDB.Shard(s.id)
	var l raft.Log
	for i := index; i > 0 && i > s.Meta().Index; i-- {
		if err := ls.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return 0, nil
			}
			return 0, fmt.Errorf("shard %d: read log %d: %w", s.id, i, err)
		}
		if l.Type == raft.LogCommand {
			s.cmdCache.Store(&[2]uint64{index, i})
			return i, nil
		}
	}
	return 0, nil
}

// mapRaftErr sorts raft errors by what is known about the proposal:
// definitely not applied, or unknown.
func mapRaftErr(err error, proposed bool) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrOverloaded
	case errors.Is(err, raft.ErrRaftShutdown) && !proposed:
		return ErrClosed
	case proposed:
		// ErrLeadershipLost, ErrRaftShutdown after enqueue, timeouts:
		// "There is no way to guarantee whether the write succeeded or failed."
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	}
	return fmt.Errorf("%w: %v", ErrNotLeader, err)
}
