package storage

import (
	"bytes"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// DefaultPageLimit is the page size of History and Outbox when the caller
// passes a limit of zero or less.
const DefaultPageLimit = 100

// HistoryScanBudget bounds the records one History call examines. Without it
// a reader that skips rejections could be made to scan an unbounded run of
// them (a violation flood), so a page may hold fewer than limit records while
// more is true.
const HistoryScanBudget = 10_000

// HistoryPageBytes bounds the record bytes of one History page: the page
// ends after the record that reaches it (so it always makes progress), with
// more set. Pages are asked for by count (up to 1,000 records) and a record
// may hold a 1 MiB payload, so without it a page could outgrow the 64 MiB
// messages that nodes and the Go client accept, and the memory of building it.
const HistoryPageBytes = 16 << 20

// HistoryRecord is one audit record of an entity: an event or a rejection, as
// the engine encoded it, at its log position.
type HistoryRecord struct {
	Pos  engine.Position
	Kind engine.HistoryKind
	Data []byte
}

// History returns the entity's records after position after (the zero
// Position means from the start), in log order, at most limit of them,
// skipping rejections unless includeRejections. next is the position to pass
// as after for the following page; more reports whether records may follow.
func (s *ShardStore) History(addr actor.Address, after engine.Position, limit int, includeRejections bool) (records []HistoryRecord, next engine.Position, more bool, err error) {
	if limit <= 0 {
		limit = DefaultPageLimit
	}
	next = after
	p := historyPrefix(s.id, addr.Key())
	start := historyKey(s.id, addr.Key(), after)
	err = s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = p
		iopt.PrefetchSize = min(limit+1, 100)
		it := txn.NewIterator(iopt)
		defer it.Close()
		scanned, size := 0, 0
		for it.Seek(start); it.Valid(); it.Next() {
			item := it.Item()
			if bytes.Equal(item.Key(), start) {
				continue
			}
			pos, ok := parsePos(item.Key()[len(p):])
			if !ok {
				return fmt.Errorf("%w: history %x", errCorruptKey, item.Key())
			}
			if scanned == HistoryScanBudget {
				more = true
				return nil
			}
			scanned++
			var rec HistoryRecord
			if err := item.Value(func(v []byte) error {
				kind, data, _, err := parseHistoryValue(v)
				if err != nil {
					return fmt.Errorf("%w (%x)", err, item.Key())
				}
				rec.Kind = kind
				if includeRejections || rec.Kind != engine.HistoryRejection {
					rec.Data = append([]byte(nil), data...)
				}
				return nil
			}); err != nil {
				return err
			}
			if !includeRejections && rec.Kind == engine.HistoryRejection {
				next = pos
				continue
			}
			if len(records) == limit {
				more = true
				return nil
			}
			rec.Pos = pos
			records = append(records, rec)
			next = pos
			if size += len(rec.Data); size >= HistoryPageBytes {
				more = true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, after, false, err
	}
	return records, next, more, nil
}

// OutboxRow is one encoded command waiting for delivery, at its log position.
type OutboxRow struct {
	Pos  engine.Position
	Data []byte
}

// Outbox returns up to limit rows after position after, in log order.
func (s *ShardStore) Outbox(after engine.Position, limit int) ([]OutboxRow, error) {
	if limit <= 0 {
		limit = DefaultPageLimit
	}
	var rows []OutboxRow
	p := tagPrefix(s.id, tagOutbox)
	start := outboxKey(s.id, after)
	err := s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = p
		iopt.PrefetchSize = min(limit, 100)
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Seek(start); it.Valid() && len(rows) < limit; it.Next() {
			item := it.Item()
			if bytes.Equal(item.Key(), start) {
				continue
			}
			pos, ok := parsePos(item.Key()[len(p):])
			if !ok {
				return fmt.Errorf("%w: outbox %x", errCorruptKey, item.Key())
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			// A packed value may begin at or before after: a page that
			// ended inside it.
			in, err := unpackOutbox(pos, v)
			if err != nil {
				return err
			}
			for _, r := range in {
				if r.Pos.After(after) && len(rows) < limit {
					if r, err = s.expandOutboxRow(txn, r); err != nil {
						return err
					}
					rows = append(rows, r)
				}
			}
		}
		return nil
	})
	return rows, err
}
