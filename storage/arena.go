package storage

import (
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// arena hands out the keys and values of one batch from a few large chunks,
// instead of an allocation for each of the thousand or so an entry writes.
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
	chunks [][]byte // every chunk, full ones first; reused from the start after reset
	n      int      // chunks[:n] are in use; chunks[n-1] is the current one
	// ents backs the Badger entries of a commit (see batch.Commit): Txn.Set
	// would allocate each one, and Badger drops them when Commit returns.
	ents []badger.Entry
}

const (
	arenaChunk = 32 << 10
	// arenaMaxAlloc is the largest slice carved from a chunk; a larger one
	// is its own allocation, so a big value neither wastes a chunk's tail
	// nor ends up in the pool.
	arenaMaxAlloc = arenaChunk / 4
	// arenaMaxChunks bounds the chunks a pooled arena keeps (the rest are
	// dropped at reset), so one huge batch does not pin memory in the pool.
	arenaMaxChunks = 16
)

// make returns a slice of length n and capacity n (appending to it cannot
// overwrite the next slice) when size is 0, or of length n and capacity size.
func (a *arena) make(n, size int) []byte {
	size = max(n, size)
	if size > arenaMaxAlloc {
		return make([]byte, n, size)
	}
	if a.n == 0 || len(a.chunks[a.n-1])+size > cap(a.chunks[a.n-1]) {
		if a.n == len(a.chunks) {
			a.chunks = append(a.chunks, make([]byte, 0, arenaChunk))
		}
		a.n++
	}
	c := a.chunks[a.n-1]
	l := len(c)
	a.chunks[a.n-1] = c[:l+size]
	return c[l : l+n : l+size]
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
	if len(a.chunks) > arenaMaxChunks {
		clear(a.chunks[arenaMaxChunks:])
		a.chunks = a.chunks[:arenaMaxChunks]
	}
	if poisonArena {
		for _, c := range a.chunks[:min(a.n, len(a.chunks))] {
			for i := range c {
				c[i] = 0xA5
			}
		}
	}
	if cap(a.ents) > maxPooledOps {
		a.ents = nil
	}
	clear(a.ents) // the entries point at the caller's values too
	a.ents = a.ents[:0]
	for i := range a.chunks[:min(a.n, len(a.chunks))] {
		a.chunks[i] = a.chunks[i][:0]
	}
	a.n = 0
}

// poisonArena, set by tests, overwrites a chunk's used bytes at reset, so a
// slice kept past its batch reads garbage instead of the next batch's data
// by luck.
var poisonArena = false

// arenaPool recycles the arenas of finished batches across every shard.
var arenaPool = sync.Pool{New: func() any { return new(arena) }}
