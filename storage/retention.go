package storage

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

var (
	_ engine.ResultSweeper = (*ShardStore)(nil)
	_ engine.ResultDeleter = (*batch)(nil)
)

// ScanResults implements engine.ResultSweeper: up to limit idempotency
// records in key order from from (a key after the shard prefix and tag).
// The engine is the shard's only writer, so between entries this reads what
// every replica holds at the same index.
func (s *ShardStore) ScanResults(from []byte, limit int) ([]engine.ResultRow, error) {
	prefix := tagPrefix(s.id, tagResult)
	var rows []engine.ResultRow
	err := s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = prefix
		iopt.PrefetchSize = min(max(limit, 1), 100)
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Seek(append(append([]byte(nil), prefix...), from...)); it.Valid() && len(rows) < limit; it.Next() {
			k := it.Item().Key()
			addr, rest, ok := parseAddress(k[len(prefix):])
			if !ok {
				return fmt.Errorf("%w: result key %x", errCorruptKey, k)
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			rows = append(rows, engine.ResultRow{Address: addr, Key: string(rest), Data: v})
		}
		return nil
	})
	return rows, err
}

// ResultKeyAfter returns the result-keyspace key (without shard prefix and
// tag) n rows after from, or nil when fewer rows remain: the leader's
// cursor for the next sweep.
func (s *ShardStore) ResultKeyAfter(from []byte, n int) ([]byte, error) {
	return s.keyAfter(tagResult, from, n)
}

// keyAfter returns the key of keyspace tag (without shard prefix and tag)
// n rows after from, or nil when fewer rows remain.
func (s *ShardStore) keyAfter(tag byte, from []byte, n int) ([]byte, error) {
	prefix := tagPrefix(s.id, tag)
	var next []byte
	err := s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.PrefetchValues = false
		iopt.Prefix = prefix
		it := txn.NewIterator(iopt)
		defer it.Close()
		i := 0
		for it.Seek(append(append([]byte(nil), prefix...), from...)); it.Valid(); it.Next() {
			if i == n {
				next = append([]byte(nil), it.Item().Key()[len(prefix):]...)
				return nil
			}
			i++
		}
		return nil
	})
	return next, err
}

// DeleteResult implements engine.ResultDeleter. The result filter keeps
// the key: a stale "maybe" only costs a lookup.
func (b *batch) DeleteResult(addr actor.Address, key string) {
	b.ops = append(b.ops, op{key: append(addrPrefix(b.s.id, tagResult, addr, len(key)), key...), del: true})
}
