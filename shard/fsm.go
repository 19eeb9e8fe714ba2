package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
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
	// haltErr says why it halted.
	haltErr atomic.Pointer[string]
	hashes  hashRing // state hash after each recent command entry (divergence.go)
}

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
	_, span := f.s.tracer.Start(context.Background(), "shard.apply")
	defer span.End()

	ent, check, err := decodeEntry(l.Index, l.Data)
	if err != nil {
		f.log.Error("undecodable log entry; applying it as empty", "index", l.Index, "err", err)
	}
	if err := f.hashes.verify(check, l.Index); err != nil {
		// Fail-stop: apply nothing more, serve nothing more.
		f.halt(err)
		f.s.metrics.diverged.Add(context.Background(), 1, f.s.metrics.shardAttr)
		f.log.Error("replica diverged from the leader; shard halted", "index", check.GetIndex(), "err", err)
		return &applyResponse{err: fmt.Errorf("%w: %v", ErrHalted, err)}
	}
	out, err := f.eng.Apply(&ent)
	if err != nil {
		// The store failed: we cannot know what it holds, so stop applying.
		// A restart re-applies everything after the durable applied index.
		f.halted.Store(true)
		f.log.Error("store failure; shard halted", "index", l.Index, "err", err)
		return &applyResponse{err: fmt.Errorf("%w: %v", ErrHalted, err)}
	}
	f.publishMeta()
	if out.Results != nil {
		f.hashes.record(f.eng.Meta())
	}
	f.s.notifyApplied()
	f.s.wakeRelay()
	span.SetAttributes(attribute.Int64("raft.index", int64(l.Index)), attribute.Int("commands", len(ent.Commands)))
	f.s.metrics.applied(out)
	return &applyResponse{results: out.Results}
}

// Snapshot makes the store durable up to the applied index (so Raft may
// compact the log behind it) and pins a read transaction for Persist.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.db.Sync(); err != nil {
		return nil, fmt.Errorf("shard %d: sync before snapshot: %w", f.s.id, err)
	}
	snap, err := f.store.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{snap: snap}, nil
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
			f.halted.Store(true)
			f.log.Error("snapshot restore failed part way; shard halted until a restore succeeds", "err", err, "state", merr)
		}
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

type fsmSnapshot struct{ snap *storage.Snapshot }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
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
	ent, _, err := decodeEntry(index, data)
	return ent, err
}

// decodeEntry is DecodeEntry with the leader's state check, if the entry
// carries one.
func decodeEntry(index uint64, data []byte) (engine.Entry, *recordv1.StateCheck, error) {
	var le recordv1.LogEntry
	ent := engine.Entry{Index: index}
	if err := proto.Unmarshal(data, &le); err != nil {
		return ent, nil, err
	}
	ent.At = le.At
	if r := le.Relayed; r != nil {
		ent.Relayed = engine.Position{Index: r.Index, Ordinal: r.Ordinal}
	}
	ent.Commands = make([]actor.Command, len(le.Commands))
	for i, c := range le.Commands {
		ent.Commands[i] = c.ToActor()
	}
	return ent, le.Check, nil
}
