package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/engine"
)

// Packed outbox rows. The engine writes one outbox row per event or send, and
// the relay deletes it once published: at several commands per log entry
// those were two of the five or so Badger writes a command cost, each an
// insert into the memtable's skiplist. A batch therefore stores the rows of
// one log index as one value, under the key of its last row:
//
//	outboxPacked | per row: uvarint ordinal | uvarint length | row
//
// A lone row is stored as it is (its first byte is the engine's row kind,
// never outboxPacked), as every row was before packing, so stores written
// before it read the same. Rows are what the state hash covers, not values,
// so packing changes no hash.
//
// An event's row is the engine's kind byte and then the very bytes of the
// event's history record, written in the same batch at the same position.
// Stored twice, they were a third of the bytes a command wrote (and each
// byte is copied into the memtable and its log, then flushed and compacted
// on every replica). A batch stores such a row as a reference instead:
//
//	outboxEventRef | address key
//
// and reads give the row back as the engine wrote it (Outbox; snapshots
// carry full rows, so that a build without references restores them). Rows
// are what the state hash covers, so references change no hash either. A
// history sweep deleting a record that a pending row still refers to first
// writes that row out in full (batch.DeleteHistory). A directory written
// with references cannot be read by a build from before them.
const (
	outboxPacked   byte = 0x00
	outboxEventRef byte = 0x01
	// maxPackedOutbox bounds a packed value, well inside a transaction;
	// further rows of the index start another value.
	maxPackedOutbox = 256 << 10
)

// packOutbox encodes rows, all of one log index and in order, as one value.
func packOutbox(rows []OutboxRow) []byte {
	return appendPackedOutbox(make([]byte, 0, packedOutboxSize(rows)), rows)
}

// packedOutboxSize bounds the length of packOutbox(rows).
func packedOutboxSize(rows []OutboxRow) int {
	n := 1
	for _, r := range rows {
		n += 2*binary.MaxVarintLen32 + len(r.Data)
	}
	return n
}

// appendPackedOutbox appends packOutbox(rows) to v.
func appendPackedOutbox(v []byte, rows []OutboxRow) []byte {
	v = append(v, outboxPacked)
	for _, r := range rows {
		v = binary.AppendUvarint(v, uint64(r.Pos.Ordinal))
		v = binary.AppendUvarint(v, uint64(len(r.Data)))
		v = append(v, r.Data...)
	}
	return v
}

// unpackOutbox decodes the value stored under position last: one row, or a
// packed value whose rows are at last's index with ordinals rising to last's.
// The rows' data alias v.
func unpackOutbox(last engine.Position, v []byte) ([]OutboxRow, error) {
	if len(v) == 0 || v[0] != outboxPacked {
		return []OutboxRow{{Pos: last, Data: v}}, nil
	}
	var rows []OutboxRow
	rest := v[1:]
	for len(rest) > 0 {
		ord, w := binary.Uvarint(rest)
		if w <= 0 || ord > uint64(last.Ordinal) {
			return nil, fmt.Errorf("%w: packed outbox row at %v", errCorruptKey, last)
		}
		rest = rest[w:]
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return nil, fmt.Errorf("%w: packed outbox row at %v", errCorruptKey, last)
		}
		rest = rest[w:]
		pos := engine.Position{Index: last.Index, Ordinal: uint32(ord)}
		if len(rows) > 0 && !pos.After(rows[len(rows)-1].Pos) {
			return nil, fmt.Errorf("%w: packed outbox rows out of order at %v", errCorruptKey, last)
		}
		rows = append(rows, OutboxRow{Pos: pos, Data: rest[:n:n]})
		rest = rest[n:]
	}
	if len(rows) == 0 || rows[len(rows)-1].Pos != last {
		return nil, fmt.Errorf("%w: packed outbox value does not end at its key %v", errCorruptKey, last)
	}
	return rows, nil
}

// encodeOutbox stores rows of one log index as one value: packed, or a lone
// row as it is.
func encodeOutbox(rows []OutboxRow) []byte {
	if len(rows) == 1 {
		return rows[0].Data
	}
	return packOutbox(rows)
}

// expandOutboxRow returns r with a reference (outboxEventRef) replaced by the
// event row it stands for, read from the history record at r's position.
func (s *ShardStore) expandOutboxRow(txn *badger.Txn, r OutboxRow) (OutboxRow, error) {
	if len(r.Data) == 0 || r.Data[0] != outboxEventRef {
		return r, nil
	}
	data, err := s.historyEvent(txn, historyKey(s.id, r.Data[1:], r.Pos))
	if err != nil {
		return r, fmt.Errorf("outbox row at %v: %w", r.Pos, err)
	}
	return OutboxRow{Pos: r.Pos, Data: append([]byte{engine.OutboxEvent}, data...)}, nil
}

// expandOutboxValue returns the outbox value stored under last with every
// reference expanded, or v itself when it holds none.
func (s *ShardStore) expandOutboxValue(txn *badger.Txn, last engine.Position, v []byte) ([]byte, error) {
	if !bytes.Contains(v, []byte{outboxEventRef}) {
		return v, nil // no reference can hide in it
	}
	rows, err := unpackOutbox(last, v)
	if err != nil {
		return nil, err
	}
	changed := false
	for i, r := range rows {
		if len(r.Data) > 0 && r.Data[0] == outboxEventRef {
			if rows[i], err = s.expandOutboxRow(txn, r); err != nil {
				return nil, err
			}
			changed = true
		}
	}
	if !changed {
		return v, nil
	}
	return encodeOutbox(rows), nil
}

// firstOutboxPos returns the position of the first pending outbox value,
// or none.
func (s *ShardStore) firstOutboxPos(txn *badger.Txn) (first engine.Position, none bool) {
	p := tagPrefix(s.id, tagOutbox)
	iopt := badger.DefaultIteratorOptions
	iopt.Prefix = p
	iopt.PrefetchValues = false
	it := txn.NewIterator(iopt)
	defer it.Close()
	it.Rewind()
	if !it.Valid() {
		return engine.Position{}, true
	}
	pos, ok := parsePos(it.Item().Key()[len(p):])
	if !ok {
		return engine.Position{}, true
	}
	// A packed value is stored under its last row: its first row is at the
	// same index, ordinal 0 at the lowest.
	return engine.Position{Index: pos.Index}, false
}
