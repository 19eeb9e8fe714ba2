package shard

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// Divergence detection. Every replica re-executes every command, so replicas
// that run the same code over the same log reach the same state hash at the
// same index; one that does not has run different or nondeterministic code,
// or its store was corrupted, and must stop before it serves what it holds.
// The leader puts its own hash (at its applied index) into a command entry
// every DefaultCheckEvery applied indexes; each replica, applying that entry,
// compares the hash it had at that index and halts on a difference. A
// replica that has not got the index any more (restarted since, or restored
// from a snapshot) skips the check: the next one covers it.

// DefaultCheckEvery is how many applied command entries pass between two
// hash checks the leader proposes.
const DefaultCheckEvery = 64

// ringSize bounds the hashes a replica remembers: a check names an index the
// leader had applied when it proposed, a few entries behind the log's end.
const ringSize = 1024

// ErrDiverged halts a replica whose state hash differs from the leader's.
type ErrDiverged struct {
	Index        uint64
	Leader, Mine []byte
	EntryIndex   uint64 // the entry that carried the check
}

func (e *ErrDiverged) Error() string {
	return fmt.Sprintf("diverged from the leader: state hash at index %d is %x here, %x on the leader (check in entry %d); rebuild this replica from a healthy one",
		e.Index, e.Mine, e.Leader, e.EntryIndex)
}

// HashRing remembers the state hash after each recent command entry, to
// compare with the leader's state checks: the FSM's on line, a replay's
// offline. Not safe for concurrent use (each has one writer and reader).
type HashRing struct {
	idx  [ringSize]uint64
	hash [ringSize][32]byte
}

// Record notes m, the state after an applied entry.
func (r *HashRing) Record(m engine.Meta) {
	i := m.Index % ringSize
	r.idx[i], r.hash[i] = m.Index, m.Hash
}

func (r *HashRing) lookup(index uint64) ([32]byte, bool) {
	i := index % ringSize
	if index == 0 || r.idx[i] != index {
		return [32]byte{}, false
	}
	return r.hash[i], true
}

// reset forgets every hash (after a snapshot restore).
func (r *HashRing) reset() { *r = HashRing{} }

// Verify compares a check, carried by entry, against the hash recorded at
// its index: an *ErrDiverged when they differ, nil when they agree or the
// index is not remembered (before a restore, or too old).
func (r *HashRing) Verify(c *recordv1.StateCheck, entry uint64) error {
	mine, ok := r.lookup(c.GetIndex())
	if !ok || bytes.Equal(mine[:], c.GetHash()) {
		return nil
	}
	return &ErrDiverged{Index: c.GetIndex(), Leader: c.GetHash(), Mine: mine[:], EntryIndex: entry}
}

// checker decides which proposed entries carry the leader's hash.
type checker struct {
	mu    sync.Mutex
	every uint64
	last  uint64 // applied index of the last check proposed
}

// next returns the check to put in the entry being proposed, or nil.
func (c *checker) next(m engine.Meta) *recordv1.StateCheck {
	if c.every == 0 || m.Index == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.Index < c.last+c.every && c.last != 0 {
		return nil
	}
	c.last = m.Index
	return &recordv1.StateCheck{Index: m.Index, Hash: m.Hash[:]}
}

// Reset deletes this node's replica of shard id, with the node stopped: its
// state, its Raft log entries and its snapshots, keeping Raft's term and vote
// (which a voter must never forget). Started again, the replica holds no
// log: the leader sends it the log or a snapshot and it rebuilds from the
// healthy replicas. dir is the replica's directory (Config.Dir).
//
// Reset a diverged or damaged replica only while the shard's other replicas
// are healthy and caught up: an entry that only this replica and the leader
// held would be on the leader alone until it replicates again.
func Reset(state *storage.DB, logs *storage.RaftDB, dir string, id uint32) error {
	if err := state.Shard(id).Clear(); err != nil {
		return fmt.Errorf("shard %d: clear state: %w", id, err)
	}
	ls := logs.Shard(id)
	first, err := ls.FirstIndex()
	if err != nil {
		return err
	}
	last, err := ls.LastIndex()
	if err != nil {
		return err
	}
	if last > 0 {
		if err := ls.DeleteRange(first, last); err != nil {
			return fmt.Errorf("shard %d: delete log: %w", id, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(dir, "snapshots")); err != nil {
		return fmt.Errorf("shard %d: remove snapshots: %w", id, err)
	}
	return nil
}
