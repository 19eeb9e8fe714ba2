package storage

import (
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/internal/slab"
)

// arena holds the keys and values of one batch (a slab.Slab) and its Badger
// entries.
//
// Nothing may keep an arena slice past the batch's Commit or Discard: the
// chunks then serve the next batch. That holds because Badger's Txn.Set keeps
// the slices only until Commit, which returns after the write goroutine copied
// every key and value into the value log, the memtable's WAL and its skiplist
// arena (badger v4 txn.go commitAndSend, db.go writeRequests). The one Badger
// path that reads entries after Commit returns is its publisher, for
// DB.Subscribe, which Rhizon never calls on a state DB. A large batch's
// journal (commitLarge) also finishes inside Commit.
type arena struct {
	slab.Slab
	// ents backs the Badger entries of a commit (see batch.Commit): Txn.Set
	// would allocate each one, and Badger drops them when Commit returns.
	ents []badger.Entry
}

// entries returns n zero entries.
func (a *arena) entries(n int) []badger.Entry {
	if cap(a.ents) < n {
		a.ents = make([]badger.Entry, n)
	}
	a.ents = a.ents[:n]
	return a.ents
}

// reset makes every chunk free again. The caller guarantees that no slice
// of the arena is still referenced (see arena).
func (a *arena) reset() {
	a.Reset(poisonArena)
	if cap(a.ents) > maxPooledOps {
		a.ents = nil
	}
	clear(a.ents) // the entries point at the caller's values too
	a.ents = a.ents[:0]
}

// poisonArena, set by tests, overwrites a chunk's used bytes at reset, so a
// slice kept past its batch reads garbage instead of the next batch's data
// by luck.
var poisonArena = false

// arenaPool recycles the arenas of finished batches across every shard.
var arenaPool = sync.Pool{New: func() any { return new(arena) }}
