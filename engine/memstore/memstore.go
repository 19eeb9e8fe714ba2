// Package memstore is an engine.Store held in memory: the scratch store of a
// replay (re-execute recorded entries and compare what they produce, without
// a data directory) and of tests that need an engine and not Badger.
//
// It keeps the Store contract the Badger store keeps: a batch's writes land
// all together at Commit, in the order they were made, and reads see only
// committed batches. The engine computes the state hash over its writes, not
// the store, so an engine over a Store and one over the Badger store reach
// the same hash from the same entries; engine's tests check that they do.
package memstore

import (
	"bytes"
	"errors"
	"slices"
	"strings"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// Record is one history record of an entity.
type Record struct {
	Pos  engine.Position
	Kind engine.HistoryKind
	Data []byte
}

// OutboxRow is one row the relay has not yet been told to delete.
type OutboxRow struct {
	Pos  engine.Position
	Data []byte
}

// Store is an in-memory engine.Store. Like the engine, it is not safe for
// concurrent use.
type Store struct {
	ents    map[string]engine.Entity
	results map[string][]byte
	// resultRefs names each result's address and key, for ScanResults.
	resultRefs map[string]resultRef
	timers     map[string]engine.Timer    // by address key + name
	history    map[string][]Record        // by address key, in position order
	histAddr   map[string]actor.Address   // the address of each history key, for ScanHistory
	trims      map[string]engine.Position // history trim marks by address key
	outbox     []OutboxRow                // in position order
	index      []string                   // actor.AppendIndexKey of every index entry, sorted
	meta       engine.Meta
}

// New returns an empty store.
func New() *Store {
	return &Store{
		ents: map[string]engine.Entity{}, results: map[string][]byte{}, resultRefs: map[string]resultRef{},
		timers: map[string]engine.Timer{}, history: map[string][]Record{},
		histAddr: map[string]actor.Address{}, trims: map[string]engine.Position{},
	}
}

var (
	_ engine.Store          = (*Store)(nil)
	_ engine.ResultSweeper  = (*Store)(nil)
	_ engine.HistorySweeper = (*Store)(nil)
	_ engine.HistoryTrimmer = (*batch)(nil)
)

func resultKey(a actor.Address, key string) string { return string(a.Key()) + "\x00" + key }
func timerKey(a actor.Address, name string) string { return string(a.Key()) + name }

// Entity returns a copy of the entity's record.
func (s *Store) Entity(a actor.Address) (engine.Entity, error) {
	e := s.ents[string(a.Key())]
	return engine.Entity{Version: e.Version, State: bytes.Clone(e.State)}, nil
}

// Result returns the stored result of (a, key).
func (s *Store) Result(a actor.Address, key string) ([]byte, bool, error) {
	r, ok := s.results[resultKey(a, key)]
	return bytes.Clone(r), ok, nil
}

// Timer returns the entity's timer name.
func (s *Store) Timer(a actor.Address, name string) (engine.Timer, bool, error) {
	t, ok := s.timers[timerKey(a, name)]
	return t, ok, nil
}

// DueTimers returns up to limit timers due at or before upTo in the Badger
// store's order: due time, then the address key and name bytes.
func (s *Store) DueTimers(upTo int64, limit int) ([]engine.Timer, error) {
	if limit <= 0 {
		return nil, nil
	}
	var due []engine.Timer
	for _, t := range s.timers { //rhizon:deterministic sorted below
		if t.At <= upTo {
			due = append(due, t)
		}
	}
	slices.SortFunc(due, func(a, b engine.Timer) int {
		if a.At != b.At {
			if a.At < b.At {
				return -1
			}
			return 1
		}
		return strings.Compare(timerKey(a.Address, a.Name), timerKey(b.Address, b.Name))
	})
	if len(due) > limit {
		due = due[:limit]
	}
	return due, nil
}

// Meta returns the applied position and state hash.
func (s *Store) Meta() (engine.Meta, error) { return s.meta, nil }

// NewBatch starts an atomic write.
func (s *Store) NewBatch() engine.Batch { return &batch{s: s} }

// History returns the entity's records after the position, oldest first, at
// most limit of them (all when limit <= 0); rejections only when asked.
func (s *Store) History(a actor.Address, after engine.Position, limit int, rejections bool) []Record {
	var out []Record
	for _, r := range s.history[string(a.Key())] {
		if !r.Pos.After(after) || (!rejections && r.Kind == engine.HistoryRejection) {
			continue
		}
		out = append(out, Record{Pos: r.Pos, Kind: r.Kind, Data: bytes.Clone(r.Data)})
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out
}

// Outbox returns the rows not yet deleted, in position order.
func (s *Store) Outbox() []OutboxRow { return slices.Clone(s.outbox) }

// batch records the writes as operations, applied in order at Commit.
type batch struct {
	s    *Store
	ops  []func(*Store)
	done bool
}

func (b *batch) add(op func(*Store)) { b.ops = append(b.ops, op) }

func (b *batch) PutEntity(a actor.Address, e engine.Entity) {
	k, e := string(a.Key()), engine.Entity{Version: e.Version, State: bytes.Clone(e.State)}
	b.add(func(s *Store) { s.ents[k] = e })
}

// The engine reuses the memory of the slices it writes once the batch is
// committed: the store keeps copies.

func (b *batch) AppendHistory(a actor.Address, pos engine.Position, kind engine.HistoryKind, data []byte) {
	k, data := string(a.Key()), bytes.Clone(data)
	b.add(func(s *Store) {
		s.histAddr[k] = a
		h := s.history[k]
		i, found := slices.BinarySearchFunc(h, pos, cmpPos)
		if found {
			h[i] = Record{Pos: pos, Kind: kind, Data: data}
			return
		}
		s.history[k] = slices.Insert(h, i, Record{Pos: pos, Kind: kind, Data: data})
	})
}

func (b *batch) DeleteHistory(a actor.Address, pos engine.Position) {
	k := string(a.Key())
	b.add(func(s *Store) {
		h := s.history[k]
		if i, found := slices.BinarySearchFunc(h, pos, cmpPos); found {
			s.history[k] = slices.Delete(h, i, i+1)
		}
	})
}

func (b *batch) PutResult(a actor.Address, key string, data []byte) {
	k, data := resultKey(a, key), bytes.Clone(data)
	b.add(func(s *Store) {
		s.results[k] = data
		s.resultRefs[k] = resultRef{a, key}
	})
}

// DeleteResult implements engine.ResultDeleter.
func (b *batch) DeleteResult(a actor.Address, key string) {
	k := resultKey(a, key)
	b.add(func(s *Store) {
		delete(s.results, k)
		delete(s.resultRefs, k)
	})
}

type resultRef struct {
	addr actor.Address
	key  string
}

// ScanResults implements engine.ResultSweeper in the order of the Badger
// store's keys (address key, then idempotency key, no separator), so a
// replay sweeps exactly what the replicas swept.
func (s *Store) ScanResults(from []byte, limit int) ([]engine.ResultRow, error) {
	type row struct {
		k string
		r engine.ResultRow
	}
	var rows []row
	for k, ref := range s.resultRefs { //rhizon:deterministic sorted below
		bk := string(ref.addr.Key()) + ref.key
		if bk < string(from) {
			continue
		}
		rows = append(rows, row{bk, engine.ResultRow{Address: ref.addr, Key: ref.key, Data: s.results[k]}})
	}
	slices.SortFunc(rows, func(a, b row) int { return strings.Compare(a.k, b.k) })
	out := make([]engine.ResultRow, 0, min(limit, len(rows)))
	for _, r := range rows[:min(limit, len(rows))] {
		out = append(out, r.r)
	}
	return out, nil
}

func (b *batch) PutOutbox(pos engine.Position, data []byte) {
	data = bytes.Clone(data)
	b.add(func(s *Store) {
		i, found := slices.BinarySearchFunc(s.outbox, pos, cmpRow)
		if found {
			s.outbox[i].Data = data
			return
		}
		s.outbox = slices.Insert(s.outbox, i, OutboxRow{Pos: pos, Data: data})
	})
}

func (b *batch) DeleteOutbox(_, upTo engine.Position) {
	b.add(func(s *Store) {
		i, found := slices.BinarySearchFunc(s.outbox, upTo, cmpRow)
		if found {
			i++
		}
		s.outbox = slices.Delete(s.outbox, 0, i)
	})
}

func (b *batch) PutTimer(t engine.Timer) {
	k := timerKey(t.Address, t.Name)
	t.Payload = bytes.Clone(t.Payload)
	b.add(func(s *Store) { s.timers[k] = t })
}

func (b *batch) DeleteTimer(t engine.Timer) {
	k := timerKey(t.Address, t.Name)
	b.add(func(s *Store) { delete(s.timers, k) })
}

// PutIndex implements engine.IndexBatch.
func (b *batch) PutIndex(a actor.Address, e actor.IndexEntry) {
	k := string(actor.AppendIndexKey(nil, a, e))
	b.add(func(s *Store) {
		if i, found := slices.BinarySearch(s.index, k); !found {
			s.index = slices.Insert(s.index, i, k)
		}
	})
}

// DeleteIndex implements engine.IndexBatch.
func (b *batch) DeleteIndex(a actor.Address, e actor.IndexEntry) {
	k := string(actor.AppendIndexKey(nil, a, e))
	b.add(func(s *Store) {
		if i, found := slices.BinarySearch(s.index, k); found {
			s.index = slices.Delete(s.index, i, i+1)
		}
	})
}

// IndexItem is one entry ScanIndex found.
type IndexItem struct {
	ID    string
	Value []byte
}

// ScanIndex selects index entries as the Badger store's ScanIndex does (the
// records aside): a page after q.After, the count of all matches, and more.
func (s *Store) ScanIndex(q actor.IndexQuery) (items []IndexItem, count uint64, more bool, err error) {
	base := string(actor.AppendIndexScope(nil, q.Tenant, q.Workspace, q.ActorType, q.Field))
	start := base + string(q.Lo)
	if q.Field == actor.ListField {
		start += q.Prefix
	}
	i, _ := slices.BinarySearch(s.index, start)
	for ; i < len(s.index) && strings.HasPrefix(s.index[i], base); i++ {
		tail := []byte(s.index[i][len(base):])
		value, id, ok := actor.SplitIndexTail(q.Field, tail)
		if !ok {
			return nil, 0, false, errors.New("memstore: corrupt index key")
		}
		in, stop := q.Match(value, id)
		if stop {
			break
		}
		if !in {
			continue
		}
		count++
		if q.After != nil && bytes.Compare(tail, q.After) <= 0 {
			continue
		}
		if len(items) == q.Limit {
			more = true
			continue
		}
		items = append(items, IndexItem{ID: id, Value: value})
	}
	return items, count, more, nil
}

func (b *batch) SetMeta(m engine.Meta) { b.add(func(s *Store) { s.meta = m }) }

// errDone: a batch is committed or discarded once.
var errDone = errors.New("memstore: batch already committed or discarded")

func (b *batch) Commit() error {
	if b.done {
		return errDone
	}
	b.done = true
	for _, op := range b.ops {
		op(b.s)
	}
	b.ops = nil
	return nil
}

func (b *batch) Discard() { b.done, b.ops = true, nil }

func cmpPos(r Record, p engine.Position) int    { return comparePos(r.Pos, p) }
func cmpRow(r OutboxRow, p engine.Position) int { return comparePos(r.Pos, p) }

func comparePos(a, b engine.Position) int {
	switch {
	case b.After(a):
		return -1
	case a.After(b):
		return 1
	}
	return 0
}
