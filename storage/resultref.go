package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rhizon/rhizon/engine"
)

// Results that refer to their events. An accepted command's result (a
// recordv1.Result) holds each of its events, byte for byte the history
// records the same batch writes: with the outbox's copy, an event was stored
// three times, and a result's bytes cost as much as another insert (see
// bench/MEASUREMENTS.md, eighth session). A batch therefore stores such a
// result with each event replaced, in place, by a reference to its record:
//
//	field 99 = 1 | the result's fields, each event (field 7) that repeats a
//	record of this batch as field 100 = uvarint index | uvarint ordinal
//
// and every read gives the result back as the engine wrote it (Result for the
// engine's duplicate check and for the API; snapshots carry full results, so
// that a build without references restores them). The state hash covers the
// result as the engine wrote it, so references change no hash.
//
// Results and history records expire independently (idempotency and history
// windows), and an event does not name its command's idempotency key. So the
// history record of an event a result refers to keeps that key beside it, in
// storage only:
//
//	historyKeyed | uvarint length | idempotency key | event
//
// and a sweep that deletes the record first writes the result out in full
// (batch.DeleteHistory). A result that expired or was replaced leaves the key
// behind; the sweep sees that the result there does not refer to the record.
// Reads and snapshots give history records without the key.
const (
	resultEventsField  = 7
	resultRefMarkField = 99
	resultRefField     = 100

	historyKeyed byte = 0x81
)

// resultRefMark starts a result stored with references; a result the engine
// writes starts with a field below 16.
var resultRefMark = protowire.AppendVarint(protowire.AppendTag(nil, resultRefMarkField, protowire.VarintType), 1)

// parseHistoryValue splits a stored history record into the engine's kind and
// bytes, and the idempotency key a result stored with references left in it.
func parseHistoryValue(v []byte) (kind engine.HistoryKind, data, idemKey []byte, err error) {
	if len(v) == 0 {
		return 0, nil, nil, fmt.Errorf("%w: empty history record", errCorruptKey)
	}
	if v[0] != historyKeyed {
		return engine.HistoryKind(v[0]), v[1:], nil, nil
	}
	n, w := binary.Uvarint(v[1:])
	if w <= 0 || n > uint64(len(v)-1-w) {
		return 0, nil, nil, fmt.Errorf("%w: history record's idempotency key", errCorruptKey)
	}
	return engine.HistoryEvent, v[1+w+int(n):], v[1+w : 1+w+int(n)], nil
}

// plainHistoryValue returns a history record as the engine wrote it (and as
// builds without references read it).
func plainHistoryValue(v []byte) ([]byte, error) {
	if len(v) == 0 || v[0] != historyKeyed {
		return v, nil
	}
	_, data, _, err := parseHistoryValue(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{byte(engine.HistoryEvent)}, data...), nil
}

// pendingEvent is an event record the batch wrote since its last result.
type pendingEvent struct {
	op   int // in batch.ops
	pos  engine.Position
	addr []byte // address key
	data []byte // the event, without the kind byte
	used bool
}

// refResult returns data with the events it repeats from the batch's own
// records replaced by references, and rewrites those records to keep idemKey;
// nil when no event of data is such a repeat (data is then stored as it is).
func (b *batch) refResult(addrKey []byte, idemKey string, data []byte) []byte {
	if len(b.cmdEvents) == 0 {
		return nil
	}
	out := append(b.mem.Make(0, len(resultRefMark)+len(data)), resultRefMark...)
	matched := 0
	for rest := data; len(rest) > 0; {
		num, typ, field, n, next, ok := nextField(rest)
		if !ok {
			return nil
		}
		rest = next
		if num == resultRefMarkField || num == resultRefField {
			return nil // not a result this code can tell apart from a reference
		}
		var pe *pendingEvent
		if num == resultEventsField && typ == protowire.BytesType {
			ev, _ := protowire.ConsumeBytes(field[n:])
			pe = b.findEvent(addrKey, ev)
		}
		if pe == nil {
			out = append(out, field...)
			continue
		}
		pe.used = true
		matched++
		var ref [2 * binary.MaxVarintLen64]byte
		r := binary.AppendUvarint(ref[:0], pe.pos.Index)
		r = binary.AppendUvarint(r, uint64(pe.pos.Ordinal))
		out = protowire.AppendBytes(protowire.AppendTag(out, resultRefField, protowire.BytesType), r)
	}
	if matched == 0 {
		return nil
	}
	for i := range b.cmdEvents {
		pe := &b.cmdEvents[i]
		if !pe.used {
			continue
		}
		v := b.mem.Make(0, 1+binary.MaxVarintLen64+len(idemKey)+len(pe.data))
		v = append(v, historyKeyed)
		v = binary.AppendUvarint(v, uint64(len(idemKey)))
		v = append(v, idemKey...)
		b.ops[pe.op].val = append(v, pe.data...)
	}
	return out
}

// findEvent returns the batch's unused event record of addrKey whose bytes
// are ev, or nil.
func (b *batch) findEvent(addrKey, ev []byte) *pendingEvent {
	for i := range b.cmdEvents {
		pe := &b.cmdEvents[i]
		if !pe.used && bytes.Equal(pe.addr, addrKey) && bytes.Equal(pe.data, ev) {
			return pe
		}
	}
	return nil
}

// expandResult returns a stored result as the engine wrote it, reading the
// events a result stored with references refers to from txn.
func (s *ShardStore) expandResult(txn *badger.Txn, addrKey, v []byte) ([]byte, error) {
	return expandResultWith(v, func(pos engine.Position) ([]byte, error) {
		return s.historyEvent(txn, historyKey(s.id, addrKey, pos))
	})
}

// historyEvent returns the event stored under the history key k, which a
// result or an outbox row refers to.
func (s *ShardStore) historyEvent(txn *badger.Txn, k []byte) ([]byte, error) {
	item, err := txn.Get(k)
	if err != nil {
		return nil, fmt.Errorf("%w: the event %x referred to: %w", errCorruptKey, k, err)
	}
	var data []byte
	err = item.Value(func(hv []byte) (err error) {
		data, err = eventOf(k, hv)
		return err
	})
	return data, err
}

// eventOf returns a copy of the event in the history record hv stored under k.
func eventOf(k, hv []byte) ([]byte, error) {
	kind, d, _, err := parseHistoryValue(hv)
	if err == nil && kind != engine.HistoryEvent {
		err = fmt.Errorf("%w: the history record %x referred to is not an event", errCorruptKey, k)
	}
	return append([]byte(nil), d...), err
}

// expandResultWith is expandResult with the events from event.
func expandResultWith(v []byte, event func(engine.Position) ([]byte, error)) ([]byte, error) {
	if !bytes.HasPrefix(v, resultRefMark) {
		return v, nil
	}
	out := make([]byte, 0, 2*len(v))
	for rest := v[len(resultRefMark):]; len(rest) > 0; {
		num, _, field, n, next, ok := nextField(rest)
		if !ok {
			return nil, fmt.Errorf("%w: result with references", errCorruptKey)
		}
		rest = next
		if num != resultRefField {
			out = append(out, field...)
			continue
		}
		pos, ok := parseEventRef(field[n:])
		if !ok {
			return nil, fmt.Errorf("%w: result's event reference", errCorruptKey)
		}
		data, err := event(pos)
		if err != nil {
			return nil, err
		}
		out = protowire.AppendBytes(protowire.AppendTag(out, resultEventsField, protowire.BytesType), data)
	}
	return out, nil
}

// resultRefs lists the positions a stored result refers to.
func resultRefs(v []byte) []engine.Position {
	if !bytes.HasPrefix(v, resultRefMark) {
		return nil
	}
	var refs []engine.Position
	for rest := v[len(resultRefMark):]; len(rest) > 0; {
		num, _, field, n, next, ok := nextField(rest)
		if !ok {
			break // expandResultWith reports it
		}
		if num == resultRefField {
			if pos, ok := parseEventRef(field[n:]); ok {
				refs = append(refs, pos)
			}
		}
		rest = next
	}
	return refs
}

// resultChunkLen is how many results a snapshot expands at a time.
const resultChunkLen = 4096

// resultChunk holds results on their way into a snapshot, in key order,
// until it reads the events they refer to in one pass in key order: in the
// results' own order the reads jump about the history keyspace (102,400
// reads took 2.2 s in random order, 0.29 s sorted, bench/MEASUREMENTS.md).
type resultChunk struct {
	s          *ShardStore
	txn        *badger.Txn
	keys, vals [][]byte // keys without the shard prefix
}

func (c *resultChunk) add(key, v []byte) {
	c.keys = append(c.keys, bytes.Clone(key))
	c.vals = append(c.vals, bytes.Clone(v))
}

func (c *resultChunk) reset() { c.keys, c.vals = c.keys[:0], c.vals[:0] }

// read fills events with the history records under the keys in want, walking
// one iterator through them in key order: a chunk's records lie close
// together, and stepping to the next key reuses the block a lookup of its
// own would read again (Badger's block cache does not keep a block read once).
func (c *resultChunk) read(want []string, events map[string][]byte) error {
	slices.Sort(want)
	iopt := badger.DefaultIteratorOptions
	iopt.Prefix = tagPrefix(c.s.id, tagHistory)
	iopt.PrefetchValues = false
	it := c.txn.NewIterator(iopt)
	defer it.Close()
	for _, hk := range want {
		k := []byte(hk)
		for steps := 0; it.Valid() && bytes.Compare(it.Item().Key(), k) < 0; steps++ {
			if steps == 16 {
				it.Seek(k)
				break
			}
			it.Next()
		}
		if !it.Valid() || bytes.Compare(it.Item().Key(), k) > 0 {
			it.Seek(k)
		}
		if !it.Valid() || !bytes.Equal(it.Item().Key(), k) {
			return fmt.Errorf("%w: the event %x referred to is not stored", errCorruptKey, k)
		}
		err := it.Item().Value(func(hv []byte) (err error) {
			events[hk], err = eventOf(k, hv)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// expand replaces every result of the chunk by its full form.
func (c *resultChunk) expand() error {
	events := map[string][]byte{}
	var want []string
	addrKeys := make([][]byte, len(c.keys))
	for i, k := range c.keys {
		refs := resultRefs(c.vals[i])
		if len(refs) == 0 {
			continue
		}
		_, idem, ok := parseAddress(k[1:])
		if !ok {
			return fmt.Errorf("%w: result key %x", errCorruptKey, k)
		}
		addrKeys[i] = k[1 : len(k)-len(idem)]
		for _, pos := range refs {
			hk := string(historyKey(c.s.id, addrKeys[i], pos))
			if _, seen := events[hk]; !seen {
				events[hk] = nil
				want = append(want, hk)
			}
		}
	}
	if err := c.read(want, events); err != nil {
		return err
	}
	for i, v := range c.vals {
		if addrKeys[i] == nil {
			continue
		}
		full, err := expandResultWith(v, func(pos engine.Position) ([]byte, error) {
			return events[string(historyKey(c.s.id, addrKeys[i], pos))], nil
		})
		if err != nil {
			return err
		}
		c.vals[i] = full
	}
	return nil
}

// nextField splits the first protobuf field off b: its number and type, its
// bytes (tag included), the length of its tag, and what follows it; ok is
// false when b does not start with a well-formed field.
func nextField(b []byte) (num protowire.Number, typ protowire.Type, field []byte, tagLen int, rest []byte, ok bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, 0, nil, false
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return 0, 0, nil, 0, nil, false
	}
	return num, typ, b[:n+m], n, b[n+m:], true
}

// parseEventRef decodes the value of a reference field: the event's position.
func parseEventRef(v []byte) (engine.Position, bool) {
	ref, n := protowire.ConsumeBytes(v)
	if n < 0 {
		return engine.Position{}, false
	}
	index, w1 := binary.Uvarint(ref)
	if w1 <= 0 {
		return engine.Position{}, false
	}
	ordinal, w2 := binary.Uvarint(ref[w1:])
	if w2 <= 0 || ordinal > math.MaxUint32 {
		return engine.Position{}, false
	}
	return engine.Position{Index: index, Ordinal: uint32(ordinal)}, true
}

// keepReferringResult records, in full, the result that refers to the event
// record under histKey (which the batch deletes), to be written at Commit.
func (b *batch) keepReferringResult(histKey []byte, pos engine.Position) {
	txn := b.reader()
	item, err := txn.Get(histKey)
	if err != nil {
		return // absent (nothing refers to it) or unreadable (neither can a reader)
	}
	var idem []byte
	_ = item.Value(func(v []byte) error {
		if len(v) > 0 && v[0] == historyKeyed {
			if _, _, k, err := parseHistoryValue(v); err == nil {
				idem = append([]byte(nil), k...)
			}
		}
		return nil
	})
	if idem == nil {
		return
	}
	addrKey := histKey[shardPrefixLen+1 : len(histKey)-12]
	rkey := resultKey(b.s.id, addrKey, string(idem))
	ritem, err := txn.Get(rkey)
	if err != nil {
		return
	}
	v, err := ritem.ValueCopy(nil)
	if err != nil || !slices.Contains(resultRefs(v), pos) {
		return
	}
	full, err := b.s.expandResult(txn, addrKey, v)
	if err != nil {
		return
	}
	b.keepResults = append(b.keepResults, op{key: rkey, val: full})
}
