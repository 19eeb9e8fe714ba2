// Package replay re-executes a shard's recorded log with the actor code of
// the running binary and compares, bit for bit, what it produces with what
// the shard recorded: each command's result, each entry's events, and the
// state hash at the end. It reads a stopped node's data directory; nothing
// in it is written except what opening the stores writes on any start
// (Badger's manifest, the Raft log's recovery of a torn tail). ShardContext
// also replays a live replica's stores, up to a position taken at the start
// (Options.At).
//
// Where the log starts at 1 the replay starts from an empty store in memory
// (engine/memstore). Where Raft compacted the log behind a snapshot, it
// starts from the newest snapshot of the shard, restored into a scratch
// Badger directory, and applies the entries after it.
package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/engine/memstore"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// Options select what a replay compares.
type Options struct {
	// Shard is the shard to replay.
	Shard uint32
	// Registry holds the actor code to replay with.
	Registry *actor.Registry
	// Entity, when set, limits the per-command comparison to that entity;
	// the state hash is still the whole shard's.
	Entity *actor.Address
	// Tenant and Workspace, when set, limit the per-command comparison to
	// that scope ("" = any).
	Tenant, Workspace string
	// At, when set, is where the replay stops and the recorded state hash
	// there: a live replica's Meta taken at the start (shard.Meta, one
	// atomic load), since its store goes on applying while the replay runs.
	// Nil: the recorded store's own applied position (a stopped node).
	At *engine.Meta
	// ShardCount is the cluster's shard count, which the engine needs to
	// place violations' audit streams (engine.WithShardCount) and the
	// shard's log does not hold. DataDir reads it from the node's control
	// group when 0; Shard and ShardContext replay with 0 (the engine's
	// single-shard placement), which differs from the record once a
	// violation was recorded in a cluster of more than one shard.
	ShardCount uint32
}

// Report is the verdict of a replay.
type Report struct {
	Shard uint32 `json:"shard"`
	// From is the first log index replayed (after the snapshot it started
	// from, if any); To is the last, the recorded store's applied index.
	From uint64 `json:"from,omitempty"`
	To   uint64 `json:"to"`
	// Snapshot is the index of the snapshot the replay started from (0: the
	// empty store).
	Snapshot uint64 `json:"snapshot,omitempty"`
	Entries  int    `json:"entries"`
	Commands int    `json:"commands"`
	Compared int    `json:"compared"` // commands whose result and events were compared
	// Identical: every comparison matched and the state hashes are equal.
	Identical bool `json:"identical"`
	// RecordedHash and ReplayedHash are the state hashes at To, in hex.
	RecordedHash string      `json:"recorded_hash"`
	ReplayedHash string      `json:"replayed_hash"`
	Divergence   *Divergence `json:"divergence,omitempty"`
}

// Divergence is the first place where the replay differs from the record.
type Divergence struct {
	Index     uint64 `json:"index"`
	CommandID string `json:"command_id,omitempty"`
	Address   string `json:"address,omitempty"`
	// What differs: "result", "events" or "state hash" (the hashes differ
	// but no compared command did: a timer, a send, a command outside the
	// scope compared, or an Evolve that changed). A state hash divergence
	// is at the first of the leader's periodic state checks in the log that
	// differs (Index is the checked position), else at the end.
	What     string `json:"what"`
	Recorded string `json:"recorded"`
	Replayed string `json:"replayed"`
}

// ErrNoData is returned for a directory that holds no state of the shard.
var ErrNoData = errors.New("replay: no recorded state for this shard in the data directory")

// ErrLogCompacted is returned when Raft deleted log entries the replay still
// had to read (a live replica took a snapshot meanwhile): run it again, it
// then starts from that snapshot.
var ErrLogCompacted = errors.New("replay: the log was compacted under the replay (a snapshot was taken meanwhile); run it again")

// ctxCheckEvery is how many entries the replay applies between looks at
// its context: often enough to stop within milliseconds.
const ctxCheckEvery = 64

// DataDir replays one shard of the node whose data directory is dir. The
// node must be stopped (Badger locks its directory).
func DataDir(dir string, opts Options) (*Report, error) {
	if opts.Registry == nil {
		return nil, errors.New("replay: no actor registry")
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	state, err := storage.Open(filepath.Join(dir, "state"), storage.Options{Logger: quiet})
	if err != nil {
		return nil, fmt.Errorf("replay: open state (is the node stopped?): %w", err)
	}
	defer func() { _ = state.Close() }()
	raftDB, err := storage.OpenRaft(filepath.Join(dir, "raft"), storage.Options{Logger: quiet})
	if err != nil {
		return nil, fmt.Errorf("replay: open raft log: %w", err)
	}
	defer func() { _ = raftDB.Close() }()
	if err := shardCountFor(dir, raftDB, &opts); err != nil {
		return nil, err
	}
	snapDir := filepath.Join(dir, "shards", fmt.Sprint(opts.Shard))
	return Shard(state.Shard(opts.Shard), raftDB.Shard(opts.Shard), snapDir, opts)
}

// Shard replays the shard whose recorded state is rec and whose Raft log is
// log; snapDir holds its Raft snapshots (used only when the log was
// compacted).
func Shard(rec *storage.ShardStore, log *storage.LogStore, snapDir string, opts Options) (*Report, error) {
	return ShardContext(context.Background(), rec, log, snapDir, opts)
}

// ShardContext is Shard stopped when ctx ends (its error is returned).
//
// On a live replica (opts.At set) rec keeps changing while the replay
// reads it, which is sound because it only reads what entries up to At
// wrote, and those records never change afterwards: events are written once
// at their position and never rewritten or deleted (DeleteHistory only
// rotates audit records of rejections, which are not compared, and history
// retention deletes records at or before a trim mark, which compareCommand
// skips); a result is
// stored once per entity and idempotency key (a later command with that key
// is a duplicate answered from it), and is compared only when it names this
// very command and index. The log entries up to At are committed, so they
// stay as they are until Raft compacts them (ErrLogCompacted).
func ShardContext(ctx context.Context, rec *storage.ShardStore, log *storage.LogStore, snapDir string, opts Options) (*Report, error) {
	var recMeta engine.Meta
	if opts.At != nil {
		recMeta = *opts.At
	} else {
		m, err := rec.Meta()
		if err != nil {
			return nil, err
		}
		recMeta = m
	}
	if recMeta.Index == 0 {
		return nil, ErrNoData
	}
	first, err := log.FirstIndex()
	if err != nil {
		return nil, err
	}
	rep := &Report{Shard: opts.Shard, To: recMeta.Index, RecordedHash: fmt.Sprintf("%x", recMeta.Hash)}

	var store engine.Store
	var history func(actor.Address, engine.Position) ([]record, error)
	if first <= 1 {
		mem := memstore.New()
		store = mem
		history = func(a actor.Address, after engine.Position) ([]record, error) {
			var out []record
			for _, r := range mem.History(a, after, 0, false) {
				out = append(out, record{r.Pos, r.Data})
			}
			return out, nil
		}
	} else {
		scratch, err := os.MkdirTemp("", "rhizon-replay-")
		if err != nil {
			return nil, err
		}
		defer func() { _ = os.RemoveAll(scratch) }()
		sdb, err := storage.Open(scratch, storage.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return nil, err
		}
		defer func() { _ = sdb.Close() }()
		ss := sdb.Shard(opts.Shard)
		if rep.Snapshot, err = restoreLatest(snapDir, ss, first, recMeta.Index); err != nil {
			return nil, err
		}
		store = ss
		history = storeHistory(ss)
	}
	eng, err := engine.New(opts.Shard, opts.Registry, store, engine.WithShardCount(opts.ShardCount))
	if err != nil {
		return nil, err
	}
	recHistory := storeHistory(rec)
	start := max(first, rep.Snapshot+1)
	rep.From = start
	var hashes shard.HashRing
	for idx := start; idx <= recMeta.Index; idx++ {
		if (idx-start)%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("replay: stopped at log entry %d of %d: %w", idx, recMeta.Index, err)
			}
		}
		var l raft.Log
		if err := log.GetLog(idx, &l); err != nil {
			if f, ferr := log.FirstIndex(); ferr == nil && f > idx {
				return nil, fmt.Errorf("%w (entry %d is gone, the log starts at %d)", ErrLogCompacted, idx, f)
			}
			return nil, fmt.Errorf("replay: log entry %d: %w", idx, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		ent, check, _ := shard.DecodeEntryCheck(l.Index, l.Data) // undecodable: empty, as the shard applied it
		if rep.Divergence == nil {
			// The leader's hash at an earlier index: a state that differs
			// is found there, not only at the end (an Evolve that changed
			// while Decide did not leaves every result and event alike).
			rep.Divergence = stateDivergence(hashes.Verify(check, idx))
		}
		out, err := eng.Apply(&ent)
		if err != nil {
			return nil, fmt.Errorf("replay: apply %d: %w", idx, err)
		}
		hashes.Record(eng.Meta())
		rep.Entries++
		rep.Commands += len(ent.Commands)
		if rep.Divergence != nil {
			continue // keep going: the final hashes are still worth reporting
		}
		for i := range ent.Commands {
			c := &ent.Commands[i]
			if !opts.selects(c.Address) || i >= len(out.Results) {
				continue
			}
			rep.Compared++
			if d, err := compareCommand(rec, recHistory, history, idx, c, &out.Results[i]); err != nil {
				return nil, err
			} else if d != nil {
				rep.Divergence = d
				break
			}
		}
	}
	m := eng.Meta()
	rep.ReplayedHash = fmt.Sprintf("%x", m.Hash)
	if rep.Divergence == nil && (m.Index != recMeta.Index || m.Hash != recMeta.Hash) {
		rep.Divergence = &Divergence{Index: recMeta.Index, What: "state hash",
			Recorded: rep.RecordedHash, Replayed: rep.ReplayedHash}
	}
	rep.Identical = rep.Divergence == nil
	return rep, nil
}

// stateDivergence reports a failed state check (shard.HashRing.Verify) as
// a replay's divergence; nil for any other result.
func stateDivergence(err error) *Divergence {
	var d *shard.ErrDiverged
	if !errors.As(err, &d) {
		return nil
	}
	return &Divergence{Index: d.Index, What: "state hash",
		Recorded: fmt.Sprintf("%x (the leader's, from its state check in entry %d)", d.Leader, d.EntryIndex),
		Replayed: fmt.Sprintf("%x", d.Mine)}
}

func (o Options) selects(a actor.Address) bool {
	if o.Entity != nil {
		return a == *o.Entity
	}
	return (o.Tenant == "" || a.Tenant == o.Tenant) && (o.Workspace == "" || a.Workspace == o.Workspace)
}

type record struct {
	pos  engine.Position
	data []byte
}

func storeHistory(s *storage.ShardStore) func(actor.Address, engine.Position) ([]record, error) {
	return func(a actor.Address, after engine.Position) ([]record, error) {
		recs, _, _, err := s.History(a, after, 1000, false)
		out := make([]record, len(recs))
		for i, r := range recs {
			out[i] = record{r.Pos, r.Data}
		}
		return out, err
	}
}

// compareCommand compares one replayed command with the record: its stored
// result (when the record holds this command's own result) and the events
// its entity got in this entry. Events are immutable once written, unlike
// rejection records, which a later violation may coalesce into.
func compareCommand(rec *storage.ShardStore, recHist, repHist func(actor.Address, engine.Position) ([]record, error),
	idx uint64, c *actor.Command, got *actor.Result) (*Divergence, error) {
	div := func(what, recorded, replayed string) *Divergence {
		return &Divergence{Index: idx, CommandID: c.ID, Address: c.Address.String(), What: what, Recorded: recorded, Replayed: replayed}
	}
	if c.IdempotencyKey != "" && !got.Duplicate && !got.Replay {
		b, ok, err := rec.Result(c.Address, c.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		if ok {
			var stored recordv1.Result
			if err := proto.Unmarshal(b, &stored); err != nil {
				return nil, fmt.Errorf("replay: stored result of %s %q: %w", c.Address, c.IdempotencyKey, err)
			}
			if want := stored.ToActor(); want.CommandID == c.ID && want.Index == idx {
				if wb, gb := encode(&want), encode(got); !bytes.Equal(wb, gb) {
					return div("result", describe(&want), describe(got)), nil
				}
			}
		}
	}
	after := engine.Position{Index: idx - 1, Ordinal: math.MaxUint32}
	rh, err := recHist(c.Address, after)
	if err != nil {
		return nil, err
	}
	ph, err := repHist(c.Address, after)
	if err != nil {
		return nil, err
	}
	rh, ph = atIndex(rh, idx), atIndex(ph, idx)
	// History retention may have deleted this entry's records from the
	// record (by a later sweep entry, which the replay applies later):
	// compare only what the record keeps. The sweeps are in the log, so the
	// state hash still covers the deletions.
	trim, err := rec.HistoryTrimmed(c.Address)
	if err != nil {
		return nil, err
	}
	rh, ph = keptAfter(rh, trim), keptAfter(ph, trim)
	if len(rh) != len(ph) {
		return div("events", describeEvents(rh), describeEvents(ph)), nil
	}
	for i := range rh {
		if rh[i].pos != ph[i].pos || !bytes.Equal(rh[i].data, ph[i].data) {
			return div("events", describeEvents(rh), describeEvents(ph)), nil
		}
	}
	return nil, nil
}

// keptAfter drops the records at or before a trim mark (zero: none).
func keptAfter(rs []record, trim engine.Position) []record {
	for len(rs) > 0 && !rs[0].pos.After(trim) {
		rs = rs[1:]
	}
	return rs
}

func atIndex(rs []record, idx uint64) []record {
	for i, r := range rs {
		if r.pos.Index != idx {
			return rs[:i]
		}
	}
	return rs
}

func encode(r *actor.Result) []byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(recordv1.FromResult(r))
	return b
}

// describe prints a result for the report: status, reason, version and
// events, as a reader compares them.
func describe(r *actor.Result) string {
	s := "accepted"
	if r.Status != actor.StatusAccepted {
		s = "rejected"
	}
	if r.Reason != actor.ReasonNone {
		s += fmt.Sprintf(" (%s", r.Reason)
		if r.Code != "" {
			s += ": " + r.Code
		}
		s += ")"
	}
	s += fmt.Sprintf(" version %d", r.Version)
	for _, e := range r.Events {
		s += fmt.Sprintf("\n  event %s %s", e.Type, e.Payload)
	}
	if len(r.Reply) > 0 {
		s += fmt.Sprintf("\n  reply %s", r.Reply)
	}
	return s
}

func describeEvents(rs []record) string {
	if len(rs) == 0 {
		return "no events"
	}
	var s string
	for i, r := range rs {
		if i > 0 {
			s += "\n"
		}
		var e recordv1.Event
		if err := proto.Unmarshal(r.data, &e); err != nil {
			s += fmt.Sprintf("%d/%d: undecodable %x", r.pos.Index, r.pos.Ordinal, r.data)
			continue
		}
		s += fmt.Sprintf("%d/%d: %s %s", r.pos.Index, r.pos.Ordinal, e.Type, e.Payload)
	}
	return s
}

// restoreLatest restores the newest snapshot of the shard that covers the
// log's gap (its index at least first-1) and is not past to (a live
// replica may have snapshotted beyond where the replay stops) into ss and
// returns its index.
func restoreLatest(dir string, ss *storage.ShardStore, first, to uint64) (uint64, error) {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "snapshots"), 2,
		hclog.NewNullLogger())
	if err != nil {
		return 0, fmt.Errorf("replay: snapshots: %w", err)
	}
	list, err := snaps.List()
	if err != nil {
		return 0, fmt.Errorf("replay: snapshots: %w", err)
	}
	newer := false           // a snapshot past to was skipped
	for _, m := range list { // newest first
		if m.Index+1 < first {
			break
		}
		if m.Index > to {
			newer = true
			continue
		}
		_, rc, err := snaps.Open(m.ID)
		if err != nil {
			continue
		}
		err = ss.Restore(rc)
		rc.Close()
		if err != nil {
			return 0, fmt.Errorf("replay: restore snapshot %s: %w", m.ID, err)
		}
		return m.Index, nil
	}
	if newer {
		return 0, fmt.Errorf("%w (the log starts at %d; the only snapshots that reach it are past %d)", ErrLogCompacted, first, to)
	}
	return 0, fmt.Errorf("replay: the log starts at %d and no snapshot reaches it", first)
}
