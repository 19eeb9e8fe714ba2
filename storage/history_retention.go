package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

var (
	_ engine.HistorySweeper = (*ShardStore)(nil)
	_ engine.HistoryTrimmer = (*batch)(nil)
)

// ScanHistory implements engine.HistorySweeper: up to limit history rows in
// key order from from (a key after the shard prefix and tag).
func (s *ShardStore) ScanHistory(from []byte, limit int) ([]engine.HistoryRow, error) {
	prefix := tagPrefix(s.id, tagHistory)
	var rows []engine.HistoryRow
	err := s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = prefix
		iopt.PrefetchSize = min(max(limit, 1), 100)
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Seek(append(append([]byte(nil), prefix...), from...)); it.Valid() && len(rows) < limit; it.Next() {
			k := it.Item().Key()
			addr, rest, ok := parseAddress(k[len(prefix):])
			pos, ok2 := parsePos(rest)
			if !ok || !ok2 {
				return fmt.Errorf("%w: history key %x", errCorruptKey, k)
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			kind, data, _, err := parseHistoryValue(v)
			if err != nil {
				return fmt.Errorf("%w (%x)", err, k)
			}
			rows = append(rows, engine.HistoryRow{Address: addr, Pos: pos, Kind: kind, Data: data})
		}
		return nil
	})
	return rows, err
}

// HistoryKeyAfter is ResultKeyAfter for the history keyspace: the leader's
// cursor for the next history sweep.
func (s *ShardStore) HistoryKeyAfter(from []byte, n int) ([]byte, error) {
	return s.keyAfter(tagHistory, from, n)
}

// HistoryTrimmed implements engine.HistorySweeper: the entity's trim mark.
func (s *ShardStore) HistoryTrimmed(addr actor.Address) (engine.Position, error) {
	var pos engine.Position
	err := s.db().View(func(txn *badger.Txn) error {
		item, err := txn.Get(addrPrefix(s.id, tagTrim, addr, 0))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		p, ok := parsePos(v)
		if !ok {
			return fmt.Errorf("%w: trim mark %x", errCorruptKey, v)
		}
		pos = p
		return nil
	})
	return pos, err
}

// PutHistoryTrim implements engine.HistoryTrimmer.
func (b *batch) PutHistoryTrim(addr actor.Address, pos engine.Position) {
	b.put(addrPrefix(b.s.id, tagTrim, addr, 0), appendPos(nil, pos))
}
