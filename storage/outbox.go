package storage

import (
	"encoding/binary"
	"fmt"

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
const (
	outboxPacked byte = 0x00
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
