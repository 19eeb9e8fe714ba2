package storage

import (
	"hash/maphash"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// resultFilter is a Bloom filter of the keys of one shard's idempotency
// records. Nearly every command looks its key up and nearly every lookup
// misses; a miss in Badger walks the memtables' skiplists and checks the
// tables' blooms, and was 5.6% of a node's CPU at w1-command C=128 (3 nodes).
// A definite "absent" from the filter skips that.
//
// A false "absent" would apply a command twice, so the filter only ever
// says "absent" for keys it has provably seen every write of:
//   - a record's key is added before the batch that writes it commits (a
//     failed or discarded batch leaves only a harmless false "maybe");
//   - it is built lazily, at the first lookup after the database opened or
//     the shard's keys were replaced (Restore, Clear, journal recovery
//     reset it), from a scan that holds the lock adds take, so a write is
//     either added after the scan or already in the filter when it starts;
//   - past the node's budget it switches off: lookups go to Badger.
//
// Layers double in size as keys arrive (a scalable Bloom filter), so an
// empty shard costs a few KiB.
type resultFilter struct {
	mu     sync.Mutex
	state  filterState
	layers []bloomLayer
	budget *filterBudget
	seed   maphash.Seed
}

type filterState uint8

const (
	filterUnbuilt filterState = iota // adds are kept; lookups build first
	filterReady
	filterOff // over budget: every lookup is a "maybe"
)

// Bloom parameters: 12 bits and 8 probes per key give about 0.3% false
// "maybe"s per full layer; layers add up (6 layers hold 340k keys).
const (
	bloomBitsPerKey = 12
	bloomProbes     = 8
	bloomFirstBits  = 1 << 16 // 8 KiB, 5,461 keys
)

type bloomLayer struct {
	bits     []uint64
	mask     uint64 // bit count - 1 (a power of two)
	n, limit int
}

func newBloomLayer(bits int) bloomLayer {
	return bloomLayer{bits: make([]uint64, bits/64), mask: uint64(bits - 1), limit: bits / bloomBitsPerKey}
}

func (l *bloomLayer) bytes() int64 { return int64(len(l.bits)) * 8 }

func (l *bloomLayer) add(h uint64) {
	h2 := h>>32 | 1
	for i := range uint64(bloomProbes) {
		b := (h + i*h2) & l.mask
		l.bits[b/64] |= 1 << (b % 64)
	}
	l.n++
}

func (l *bloomLayer) has(h uint64) bool {
	h2 := h>>32 | 1
	for i := range uint64(bloomProbes) {
		b := (h + i*h2) & l.mask
		if l.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// filterBudget bounds the bytes of every shard's filter on a node.
type filterBudget struct {
	mu        sync.Mutex
	used, max int64
}

func (b *filterBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *filterBudget) give(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

func newResultFilter(budget *filterBudget) *resultFilter {
	f := &resultFilter{budget: budget, seed: maphash.MakeSeed()}
	if budget.max <= 0 {
		f.state = filterOff
	}
	return f
}

// add records that a record under key may exist from now on.
func (f *resultFilter) add(key []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addLocked(maphash.Bytes(f.seed, key))
}

func (f *resultFilter) addLocked(h uint64) {
	if f.state == filterOff {
		return
	}
	if len(f.layers) == 0 || f.layers[len(f.layers)-1].n >= f.layers[len(f.layers)-1].limit {
		bits := bloomFirstBits
		if len(f.layers) > 0 {
			bits = 2 * len(f.layers[len(f.layers)-1].bits) * 64
		}
		l := newBloomLayer(bits)
		if !f.budget.take(l.bytes()) {
			f.dropLocked()
			f.state = filterOff
			return
		}
		f.layers = append(f.layers, l)
	}
	f.layers[len(f.layers)-1].add(h)
}

// mayHave reports whether a record under key may exist; false is certain.
// build lists the shard's record keys; it runs at most once per reset.
func (f *resultFilter) mayHave(key []byte, build func(add func(key []byte)) error) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == filterUnbuilt {
		err := build(func(k []byte) { f.addLocked(maphash.Bytes(f.seed, k)) })
		if err != nil {
			return true // try again at the next lookup
		}
		if f.state == filterUnbuilt {
			f.state = filterReady
		}
	}
	if f.state != filterReady {
		return true
	}
	h := maphash.Bytes(f.seed, key)
	for i := range f.layers {
		if f.layers[i].has(h) {
			return true
		}
	}
	return false
}

// reset forgets everything: the shard's keys were (or are being) replaced.
// A filter switched off for its budget gets another chance.
func (f *resultFilter) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropLocked()
	if f.budget.max > 0 {
		f.state = filterUnbuilt
	}
}

func (f *resultFilter) dropLocked() {
	for i := range f.layers {
		f.budget.give(f.layers[i].bytes())
	}
	f.layers = nil
}

// resultKeys lists the keys of the shard's idempotency records, without
// reading their values.
func (s *ShardStore) resultKeys(add func(key []byte)) error {
	return s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.PrefetchValues = false
		iopt.Prefix = tagPrefix(s.id, tagResult)
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			add(it.Item().Key())
		}
		return nil
	})
}
