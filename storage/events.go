package storage

import (
	"container/heap"
	"fmt"
	"sort"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/engine"
)

// Events returns the shard's committed events (never rejections) at
// positions from from (inclusive), in position order, at most limit of them
// (DefaultPageLimit when limit <= 0). next is the from of the following call;
// done reports that no event at or after next exists.
//
// It is for rebuilding the events stream (an admin operation), not a hot
// path: history is keyed by entity, so every call scans the shard's whole
// history keyspace, O(shard history). Memory stays O(limit): only the limit
// smallest positions (plus one, to know whether more follow) are kept, in a
// heap.
func (s *ShardStore) Events(from engine.Position, limit int) (events []HistoryRecord, next engine.Position, done bool, err error) {
	if limit <= 0 {
		limit = DefaultPageLimit
	}
	keep := limit + 1 // one more says whether a next page exists
	h := &posHeap{}
	p := tagPrefix(s.id, tagHistory)
	err = s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = p
		iopt.PrefetchValues = false // most records are not kept: read values only for those that are
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			// The address is self-delimiting, the position is the key's last 12 bytes.
			if len(k) < len(p)+12 {
				return fmt.Errorf("%w: history %x", errCorruptKey, k)
			}
			pos, _ := parsePos(k[len(k)-12:])
			if from.After(pos) || h.Len() == keep && !(*h)[0].Pos.After(pos) {
				continue
			}
			rec := HistoryRecord{Pos: pos}
			if err := item.Value(func(v []byte) error {
				kind, data, _, err := parseHistoryValue(v)
				if err != nil {
					return fmt.Errorf("%w (%x)", err, k)
				}
				rec.Kind = kind
				if rec.Kind == engine.HistoryEvent {
					rec.Data = append([]byte(nil), data...)
				}
				return nil
			}); err != nil {
				return err
			}
			if rec.Kind != engine.HistoryEvent {
				continue
			}
			heap.Push(h, rec)
			if h.Len() > keep {
				heap.Pop(h) // drops the largest position
			}
		}
		return nil
	})
	if err != nil {
		return nil, from, false, err
	}
	events = []HistoryRecord(*h)
	sort.Slice(events, func(i, j int) bool { return events[j].Pos.After(events[i].Pos) })
	if len(events) <= limit {
		next = from
		if n := len(events); n > 0 {
			next = successor(events[n-1].Pos)
		}
		return events, next, true, nil
	}
	return events[:limit], events[limit].Pos, false, nil
}

// successor is the smallest position after p.
func successor(p engine.Position) engine.Position {
	return engine.Position{Index: p.Index, Ordinal: p.Ordinal + 1}
}

// posHeap is a max-heap of records by position: its root is the largest
// position kept, the one to drop when a smaller one arrives.
type posHeap []HistoryRecord

func (h posHeap) Len() int           { return len(h) }
func (h posHeap) Less(i, j int) bool { return h[i].Pos.After(h[j].Pos) }
func (h posHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *posHeap) Push(x any)        { *h = append(*h, x.(HistoryRecord)) }
func (h *posHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
