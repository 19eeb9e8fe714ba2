package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/tracectx"
	"github.com/rhizon/rhizon/storage"
)

// fsm adapts the engine to hashicorp/raft. Raft calls Apply, Snapshot and
// Restore from one goroutine; Persist runs concurrently with later Applies and
// therefore reads only from the snapshot's own read transaction.
type fsm struct {
	s     *Shard
	eng   *engine.Engine
	store *storage.ShardStore
	db    *storage.DB
	log   *slog.Logger

	meta   atomic.Pointer[engine.Meta] // last applied, for readers on other goroutines
	halted atomic.Bool
	// handingOver: a handOver goroutine runs (one per halt).
	handingOver atomic.Bool
	// haltErr says why it halted, for Status (health reports it).
	haltErr atomic.Pointer[string]
	// missing is the revision the replica waits for, when that is why it
	// halted: the node reopens it once it loaded that revision.
	missing atomic.Pointer[engine.MissingRevisionError]
	hashes  HashRing // state hash after each recent command entry (divergence.go)
}

// halt stops applying: what the store holds is unknown after err.
func (f *fsm) halt(err error) {
	msg := err.Error()
	f.haltErr.Store(&msg)
	f.halted.Store(true)
	if f.s.raft != nil && f.handingOver.CompareAndSwap(false, true) {
		go f.handOver()
	}
}

// handOver keeps a halted replica from leading: a halted leader would keep
// its shard from taking writes or reads while the other replicas are fine.
// It hands leadership over whenever it finds itself leading, until the
// replica is restored or closes: once is not enough, since a transfer can
// fail (a follower too slow to catch up in time) and an election can make
// the halted replica leader again (its log is as long as anyone's; CI saw a
// shard refuse writes for 20 s that way). It runs on a goroutine of its own:
// the transfer waits on Raft, which waits on Apply.
func (f *fsm) handOver() {
	tick := time.NewTicker(handOverEvery)
	defer tick.Stop()
	for {
		for f.halted.Load() {
			if f.s.raft.State() == raft.Leader {
				if err := f.s.raft.LeadershipTransfer().Error(); err != nil {
					f.log.Warn("halted leader could not hand leadership over; trying again", "err", err)
				}
			}
			select {
			case <-f.s.stop:
				return
			case <-tick.C:
			}
		}
		f.handingOver.Store(false)
		// A halt between the loop's last look and the store above found
		// the flag still set and started no goroutine: take it on.
		if !f.halted.Load() || !f.handingOver.CompareAndSwap(false, true) {
			return
		}
	}
}

// handOverEvery is how often a halted replica checks whether it leads.
const handOverEvery = 500 * time.Millisecond

// applyResponse is what Apply hands back to the proposer through the future.
type applyResponse struct {
	results []actor.Result
	err     error
}

func (f *fsm) publishMeta() {
	m := f.eng.Meta()
	f.meta.Store(&m)
}

// Apply decodes one log entry and applies it. Entries at or below the store's
// applied index were applied before a restart and are skipped by the engine.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if f.halted.Load() {
		return &applyResponse{err: ErrHalted}
	}
	start := time.Now()
	_, span := f.s.tracer.Start(context.Background(), "shard.apply")
	defer span.End()

	ent, check, err := DecodeEntryCheck(l.Index, l.Data)
	if err != nil {
		f.log.Error("undecodable log entry; applying it as empty", "index", l.Index, "err", err)
	}
	if err := f.hashes.Verify(check, l.Index); err != nil {
		// Fail-stop: apply nothing more, serve nothing more.
		f.halt(err)
		f.s.metrics.diverged.Add(context.Background(), 1, f.s.metrics.shardAttr)
		f.log.Error("replica diverged from the leader; shard halted", "index", check.GetIndex(), "err", err)
		return &applyResponse{err: fmt.Errorf("%w: %v", ErrHalted, err)}
	}
	out, err := engine.Applied{}, applyFailpoint(&ent)
	if err == nil {
		out, err = f.eng.Apply(&ent)
	}
	if errors.Is(err, engine.ErrMissingRevision) {
		// Nothing was written: stop applying here (skipping the entry
		// would diverge) until the replica reopens with a registry that
		// has the revision: a restart with a binary that has it, or the
		// node loading it when it is deployed at run time (reopenWaiting
		// in the cluster package), re-applies from this entry.
		f.halt(err)
		var mr *engine.MissingRevisionError
		if errors.As(err, &mr) {
			f.s.metrics.missingRevision(mr.ActorType, mr.Revision)
			f.missing.Store(mr)
		}
		f.log.Error("shard waiting for an actor revision this node lacks; not applying", "index", l.Index, "err", err)
		return &applyResponse{err: fmt.Errorf("%w: %v", ErrHalted, err)}
	}
	if err != nil {
		// The store failed: we cannot know what it holds, so stop applying.
		// A restart re-applies everything after the durable applied index.
		f.halt(err)
		f.log.Error("store failure; shard halted", "index", l.Index, "err", err)
		return &applyResponse{err: fmt.Errorf("%w: %v", ErrHalted, err)}
	}
	f.publishMeta()
	if out.Results != nil {
		f.hashes.Record(f.eng.Meta())
	}
	f.s.notifyApplied()
	f.s.wakeRelay()
	span.SetAttributes(attribute.Int64("raft.index", int64(l.Index)), attribute.Int("commands", len(ent.Commands)))
	f.traceCommands(span, start, &ent, out.Results)
	f.s.metrics.applied(out)
	return &applyResponse{results: out.Results}
}

// traceCommands puts each command's decision into the trace of the request
// that submitted it: an "engine.apply" span, child of the traceparent the
// command carries in the log entry (the submitting gateway's or ingress
// consumer's span), linked to the entry's "shard.apply" span, which links
// back to it. Every replica records its own. A command without a
// sampled traceparent (or a replay after restart, which has no results)
// gets none.
func (f *fsm) traceCommands(entry trace.Span, start time.Time, ent *engine.Entry, results []actor.Result) {
	if len(results) != len(ent.Commands) {
		return
	}
	entryLink := trace.Link{SpanContext: entry.SpanContext()}
	shardAttr := tracectx.KeyShard.Int64(int64(f.s.id))
	for i := range ent.Commands {
		c := &ent.Commands[i]
		parent := tracectx.Parse(c.TraceParent)
		if !parent.IsSampled() {
			// The default samplers (parent-based) would record nothing
			// under it: skip the span's cost on every command.
			continue
		}
		entry.AddLink(trace.Link{SpanContext: parent})
		_, sp := f.s.tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "engine.apply",
			trace.WithTimestamp(start), trace.WithLinks(entryLink))
		if sp.IsRecording() {
			sp.SetAttributes(tracectx.Command(c)...)
			sp.SetAttributes(tracectx.Result(&results[i])...)
			sp.SetAttributes(shardAttr, attribute.Int64("raft.index", int64(ent.Index)))
		}
		sp.End()
	}
}

// Snapshot pins a read transaction for Persist. It runs on the apply
// goroutine, so it only pins: syncing the store, which Raft's compaction of
// the log behind the snapshot needs, is Persist's (see fsmSnapshot).
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.halted.Load() {
		// Raft would record the snapshot as covering the entries this
		// replica did not apply; a restart would then skip them.
		return nil, fmt.Errorf("shard %d: no snapshot while halted: %s", f.s.id, f.s.haltError())
	}
	snap, err := f.store.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{snap: snap, sync: f.db.Sync, shard: f.s.id}, nil
}

// Restore replaces the shard's state with a snapshot from the leader.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(rc); err != nil {
		// A restore that failed part way has replaced some keys: applying
		// later entries over that (with the engine's meta and cache of the
		// old state) would diverge from the other replicas. Halt, as on any
		// store failure, until a restore succeeds. A stream refused before
		// it touched anything (ErrBadSnapshot) leaves the state as it was.
		if _, merr := f.store.Meta(); merr != nil {
			f.halt(fmt.Errorf("snapshot restore failed part way: %w", err))
			f.log.Error("snapshot restore failed part way; shard halted until a restore succeeds", "err", err, "state", merr)
		}
		return fmt.Errorf("shard %d: restore: %w", f.s.id, err)
	}
	// A snapshot of a leader declared otherwise (or older) carries other
	// indexes: rebuild them from the states for this node's declaration.
	if _, err := f.store.EnsureIndexes(f.s.cfg.Registry); err != nil {
		f.halt(err)
		return fmt.Errorf("shard %d: restore: %w", f.s.id, err)
	}
	if err := f.db.Sync(); err != nil {
		return fmt.Errorf("shard %d: sync after restore: %w", f.s.id, err)
	}
	if err := f.eng.Reload(); err != nil {
		return err
	}
	f.hashes.reset() // the hashes before the snapshot are not this state's history
	f.halted.Store(false)
	f.publishMeta()
	f.s.notifyApplied()
	return nil
}

// fsmSnapshot is a pinned state. Raft compacts its log up to the snapshot's
// index once Persist returns, and a restart then starts from the state
// store, so Persist first makes the store durable: every write up to the
// index, and whatever was applied since, which only makes more durable.
// Syncing here rather than in Snapshot keeps the fsyncs of the memtable
// files (tens to hundreds of milliseconds under load) off the apply
// goroutine, where they stalled every command of the group.
type fsmSnapshot struct {
	snap  *storage.Snapshot
	sync  func() error
	shard uint32
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.sync(); err != nil {
		return errors.Join(fmt.Errorf("shard %d: sync before snapshot: %w", s.shard, err), sink.Cancel())
	}
	if _, err := s.snap.WriteTo(sink); err != nil {
		return errors.Join(err, sink.Cancel())
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.snap.Release() }

// DecodeEntry decodes the command log entry at index as every replica (and a
// replay) applies it. Undecodable bytes give an empty entry and the error:
// every replica sees the same bytes and fails the same way, so applying it as
// empty keeps the index advancing in step.
func DecodeEntry(index uint64, data []byte) (engine.Entry, error) {
	ent, _, err := DecodeEntryCheck(index, data)
	return ent, err
}

// DecodeEntryCheck is DecodeEntry with the leader's state check, if the
// entry carries one (nil otherwise): a replay compares its own state hash at
// the check's index, as every replica does on line.
func DecodeEntryCheck(index uint64, data []byte) (engine.Entry, *recordv1.StateCheck, error) {
	var le recordv1.LogEntry
	ent := engine.Entry{Index: index}
	if err := proto.Unmarshal(data, &le); err != nil {
		return ent, nil, err
	}
	ent.At = le.At
	if r := le.Relayed; r != nil {
		ent.Relayed = engine.Position{Index: r.Index, Ordinal: r.Ordinal}
	}
	if len(le.Revisions) > 0 {
		ent.Revisions = make(map[string]string, len(le.Revisions))
		for _, r := range le.Revisions {
			ent.Revisions[r.ActorType] = r.Revision
		}
	}
	for _, r := range le.Retention {
		if r.IdempotencyMs > 0 {
			if ent.Retention == nil {
				ent.Retention = make(map[string]int64, len(le.Retention))
			}
			ent.Retention[r.Tenant] = r.IdempotencyMs
		}
		if r.HistoryMs > 0 {
			if ent.HistoryRetention == nil {
				ent.HistoryRetention = make(map[string]int64, len(le.Retention))
			}
			ent.HistoryRetention[r.Tenant] = r.HistoryMs
		}
	}
	if sw := le.Sweep; sw != nil {
		ent.Sweep = &engine.Sweep{From: sw.FromKey, Limit: int(sw.Limit)}
	}
	if sw := le.HistorySweep; sw != nil {
		ent.HistorySweep = &engine.HistorySweep{From: sw.FromKey, Limit: int(sw.Limit), Through: sw.ThroughIndex}
	}
	ent.Commands = make([]actor.Command, len(le.Commands))
	for i, c := range le.Commands {
		ent.Commands[i] = c.ToActor()
	}
	return ent, le.Check, nil
}
