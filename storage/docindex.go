package storage

import (
	"bytes"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/actor"
)

// PutIndex implements engine.IndexBatch: the entry's key, with no value.
func (b *batch) PutIndex(addr actor.Address, e actor.IndexEntry) {
	b.put(actor.AppendIndexKey(keyBuf(b.s.id, tagIndex, 64), addr, e), nil)
}

// DeleteIndex implements engine.IndexBatch.
func (b *batch) DeleteIndex(addr actor.Address, e actor.IndexEntry) {
	b.ops = append(b.ops, op{key: actor.AppendIndexKey(keyBuf(b.s.id, tagIndex, 64), addr, e), del: true})
}

// IndexItem is one document a List found: its id, the indexed value
// (encoded; nil for ListField) and its record.
type IndexItem struct {
	ID     string
	Value  []byte
	Entity actor.Entity
}

// ScanIndex returns up to q.Limit documents of q's index after q.After, in
// (value, id) order, with their records, all read from one snapshot; count is
// how many entries match q's bounds and prefix in all (After and Limit
// aside), and more whether entries follow the page.
func (s *ShardStore) ScanIndex(q actor.IndexQuery) (items []IndexItem, count uint64, more bool, err error) {
	base := actor.AppendIndexScope(tagPrefix(s.id, tagIndex), q.Tenant, q.Workspace, q.ActorType, q.Field)
	start := append(bytes.Clone(base), q.Lo...)
	if q.Field == actor.ListField {
		start = append(start, q.Prefix...)
	}
	err = s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = base
		iopt.PrefetchValues = false // index values are empty
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			tail := it.Item().Key()[len(base):]
			value, id, ok := actor.SplitIndexTail(q.Field, tail)
			if !ok {
				return fmt.Errorf("%w: index %x", errCorruptKey, it.Item().Key())
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
				continue // keep counting
			}
			addr := actor.Address{Tenant: q.Tenant, Workspace: q.Workspace, ActorType: q.ActorType, EntityID: id}
			ent, err := s.entityIn(txn, addrPrefix(s.id, tagEntity, addr, 0), addr)
			if err != nil {
				return err
			}
			items = append(items, IndexItem{ID: id, Value: bytes.Clone(value), Entity: ent})
		}
		return nil
	})
	return items, count, more, err
}
