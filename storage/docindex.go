package storage

import (
	"bytes"
	"fmt"
	"strings"

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
		size, full := 0, false
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
			if full || len(items) == q.Limit {
				more = true
				continue // keep counting
			}
			addr := actor.Address{Tenant: q.Tenant, Workspace: q.Workspace, ActorType: q.ActorType, EntityID: id}
			ent, err := s.entityIn(txn, addrPrefix(s.id, tagEntity, addr, 0), addr)
			if err != nil {
				return err
			}
			items = append(items, IndexItem{ID: id, Value: bytes.Clone(value), Entity: ent})
			size += len(ent.State)
			full = q.MaxBytes > 0 && size >= q.MaxBytes
		}
		return nil
	})
	return items, count, more, err
}

// indexDeclKey holds the declaration the shard's index keyspace was built
// for (see IndexDeclaration). Its empty tenant is no valid address's, so no
// scan meets it; it lives in the index keyspace so a snapshot carries it
// with the entries it describes.
func indexDeclKey(shard uint32) []byte { return append(tagPrefix(shard, tagIndex), 0, 0) }

// IndexDeclaration names the document types of reg and their indexed fields,
// sorted: the index keyspace of a store is right for reg only if it was
// built under the same declaration.
func IndexDeclaration(reg *actor.Registry) string {
	var b strings.Builder
	for _, t := range reg.Types() {
		beh, _ := reg.Lookup(t)
		if _, ok := beh.(actor.Indexer); !ok {
			continue
		}
		b.WriteString(t)
		b.WriteByte('=')
		if f, ok := beh.(interface{ IndexedFields() []string }); ok {
			b.WriteString(strings.Join(f.IndexedFields(), ","))
		}
		b.WriteByte(';')
	}
	return b.String()
}

// EnsureIndexes rebuilds the shard's index keyspace from the entity states
// when it was built under another declaration than reg's (a document type or
// an index added or removed, or a store written before indexes existed).
// The indexes are a pure function of the states, so every replica rebuilds
// the same entries; the declaration is written last, so a crash midway
// rebuilds again at the next start. It runs before the engine applies
// anything, and after a snapshot is restored.
func (s *ShardStore) EnsureIndexes(reg *actor.Registry) (rebuilt bool, err error) {
	want := IndexDeclaration(reg)
	have, _, err := s.copyIn(nil, indexDeclKey(s.id))
	if err != nil {
		return false, err
	}
	if string(have) == want {
		return false, nil
	}
	if err := s.d.kv.deleteKeys(tagPrefix(s.id, tagIndex), nil, nil); err != nil {
		return false, fmt.Errorf("storage: shard %d: clear indexes: %w", s.id, err)
	}
	const chunk = 1024
	ops := make([]op, 0, chunk)
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		err := s.d.kv.writeChunked(ops)
		ops = ops[:0]
		return err
	}
	p := tagPrefix(s.id, tagEntity)
	err = s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = p
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			addr, rest, ok := parseAddress(item.Key()[len(p):])
			if !ok || len(rest) != 0 {
				return fmt.Errorf("%w: entity %x", errCorruptKey, item.Key())
			}
			beh, ok := reg.Lookup(addr.ActorType)
			if !ok {
				continue
			}
			ix, ok := beh.(actor.Indexer)
			if !ok {
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) < 8 {
				return fmt.Errorf("%w: entity record of %s is %d bytes", errCorruptKey, addr, len(v))
			}
			for _, e := range ix.IndexEntries(v[8:]) {
				ops = append(ops, op{key: actor.AppendIndexKey(keyBuf(s.id, tagIndex, 64), addr, e)})
			}
			if len(ops) >= chunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = s.d.kv.writeChunked([]op{{key: indexDeclKey(s.id), val: []byte(want)}})
	}
	if err != nil {
		return false, fmt.Errorf("storage: shard %d: rebuild indexes: %w", s.id, err)
	}
	return true, nil
}
