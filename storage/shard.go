package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// ErrRestoreIncomplete is returned by Meta when a Restore of the shard began
// and did not finish (it failed or the process died while it replaced the
// keys). The shard's state is then unusable until a snapshot is restored
// again: start Raft so that it restores its latest snapshot, or install one.
var ErrRestoreIncomplete = errors.New("storage: shard restore did not finish; restore a snapshot")

// errBatchDone is returned by Commit on a batch already committed or discarded.
var errBatchDone = errors.New("storage: batch already committed or discarded")

// ShardStore is one shard's keyspace in a DB; it implements engine.Store.
// Reads are safe from any goroutine; the engine is its only writer.
type ShardStore struct {
	d       *DB
	id      uint32
	due     *dueHint
	results *resultFilter
}

var _ engine.Store = (*ShardStore)(nil)

// ID is the shard id that prefixes every key of the store.
func (s *ShardStore) ID() uint32 { return s.id }

func (s *ShardStore) db() *badger.DB { return s.d.kv.db }

// view runs fn in txn when it is given, else in a new read transaction.
func (s *ShardStore) view(txn *badger.Txn, fn func(*badger.Txn) error) error {
	if txn != nil {
		return fn(txn)
	}
	return s.db().View(fn)
}

// getIn calls fn with the value stored under key, if any, reading in rtxn
// (nil: a new read transaction). The value is only valid inside fn.
func (s *ShardStore) getIn(rtxn *badger.Txn, key []byte, fn func(val []byte) error) (bool, error) {
	found := false
	err := s.view(rtxn, func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(fn)
	})
	return found, err
}

// copyIn returns a copy of the value stored under key, if any, reading in
// rtxn (nil: a new read transaction). Unlike getIn it needs no callback,
// which would cost the engine's lookups an allocation each.
func (s *ShardStore) copyIn(rtxn *badger.Txn, key []byte) ([]byte, bool, error) {
	if rtxn == nil {
		var v []byte
		var ok bool
		err := s.db().View(func(txn *badger.Txn) error {
			var err error
			v, ok, err = copyFrom(txn, key)
			return err
		})
		return v, ok, err
	}
	return copyFrom(rtxn, key)
}

func copyFrom(txn *badger.Txn, key []byte) ([]byte, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

// Entity returns the entity's record; a zero Entity when it has none.
func (s *ShardStore) Entity(addr actor.Address) (engine.Entity, error) {
	return s.entityIn(nil, addrPrefix(s.id, tagEntity, addr, 0), addr)
}

// entityIn reads the entity record under key (addr's entity key).
func (s *ShardStore) entityIn(txn *badger.Txn, key []byte, addr actor.Address) (engine.Entity, error) {
	var e engine.Entity
	v, ok, err := s.copyIn(txn, key)
	if err != nil || !ok {
		return e, err
	}
	if len(v) < 8 {
		return e, fmt.Errorf("%w: entity record of %s is %d bytes", errCorruptKey, addr, len(v))
	}
	e.Version = binary.BigEndian.Uint64(v)
	if len(v) > 8 {
		e.State = v[8:len(v):len(v)] // the copy is ours; the cap keeps appends off it
	}
	return e, nil
}

// Result returns the encoded result stored under (addr, idempotency key).
func (s *ShardStore) Result(addr actor.Address, key string) ([]byte, bool, error) {
	k := append(addrPrefix(s.id, tagResult, addr, len(key)), key...)
	if !s.results.mayHave(k, s.resultKeys) {
		return nil, false, nil
	}
	var v []byte
	var ok bool
	err := s.db().View(func(txn *badger.Txn) error {
		var err error
		if v, ok, err = s.copyIn(txn, k); !ok || err != nil {
			return err
		}
		v, err = s.expandResult(txn, k[shardPrefixLen+1:len(k)-len(key)], v)
		return err
	})
	return v, ok && err == nil, err
}

// Timer returns the entity's timer name, if set.
func (s *ShardStore) Timer(addr actor.Address, name string) (engine.Timer, bool, error) {
	return s.timerIn(nil, addr, name)
}

func (s *ShardStore) timerIn(txn *badger.Txn, addr actor.Address, name string) (engine.Timer, bool, error) {
	t := engine.Timer{Address: addr, Name: name}
	ok, err := s.getIn(txn, timerEntKey(s.id, addr.Key(), name), func(v []byte) error {
		at, payload, err := decodeTimerEnt(v)
		t.At, t.Payload = at, payload
		return err
	})
	if err != nil || !ok {
		return engine.Timer{}, false, err
	}
	return t, true, nil
}

func decodeTimerEnt(v []byte) (int64, []byte, error) {
	if len(v) < 8 {
		return 0, nil, fmt.Errorf("%w: timer record is %d bytes", errCorruptKey, len(v))
	}
	var payload []byte
	if len(v) > 8 {
		payload = append([]byte(nil), v[8:]...)
	}
	return int64(binary.BigEndian.Uint64(v)), payload, nil
}

// DueTimers returns up to limit timers with At <= upTo in key order, which is
// (At, address key bytes, name bytes): At is stored sign-flipped big-endian so
// negative times sort first, and Address.Key() is length-prefixed, so two
// addresses compare by the length and then the bytes of each part in turn
// (not as their strings would). Every replica sees the same order.
func (s *ShardStore) DueTimers(upTo int64, limit int) ([]engine.Timer, error) {
	return s.dueTimersIn(nil, upTo, limit)
}

func (s *ShardStore) dueTimersIn(rtxn *badger.Txn, upTo int64, limit int) ([]engine.Timer, error) {
	if limit <= 0 {
		return nil, nil
	}
	low, gen := s.due.read()
	if upTo < low {
		// No live timer is due before low: skip the iterator, which the
		// engine would otherwise open for every entry, most finding nothing.
		return nil, nil
	}
	var out []engine.Timer
	p := tagPrefix(s.id, tagTimerDue)
	first := int64(math.MaxInt64) // due time of the first live timer; max when none
	err := s.view(rtxn, func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = p
		iopt.PrefetchSize = min(limit, 100)
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Seek(binary.BigEndian.AppendUint64(p, flipSign(low))); it.Valid() && len(out) < limit; it.Next() {
			k := it.Item().Key()[len(p):]
			if len(k) < 8 {
				return fmt.Errorf("%w: timer %x", errCorruptKey, it.Item().Key())
			}
			at := unflipSign(binary.BigEndian.Uint64(k))
			first = min(first, at)
			if at > upTo {
				break
			}
			addr, name, ok := parseAddress(k[8:])
			if !ok {
				return fmt.Errorf("%w: timer %x", errCorruptKey, it.Item().Key())
			}
			payload, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(payload) == 0 {
				payload = nil
			}
			out = append(out, engine.Timer{Address: addr, Name: string(name), At: at, Payload: payload})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.due.raise(first, gen)
	return out, nil
}

// Meta returns the applied position and state hash (zero when new). It
// returns ErrRestoreIncomplete while a Restore has not finished, and first
// finishes a large batch that a failure interrupted.
func (s *ShardStore) Meta() (engine.Meta, error) {
	for attempt := 0; ; attempt++ {
		var m engine.Meta
		var restoring, journal bool
		err := s.db().View(func(txn *badger.Txn) error {
			var err error
			if restoring, err = has(txn, tagPrefix(s.id, tagRestoring)); err != nil || restoring {
				return err
			}
			if journal, err = has(txn, tagPrefix(s.id, tagJournalCommit)); err != nil || journal {
				return err
			}
			item, err := txn.Get(metaKey(s.id))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			return item.Value(func(v []byte) error {
				m, err = decodeMeta(v)
				return err
			})
		})
		switch {
		case err != nil:
			return engine.Meta{}, err
		case restoring:
			return engine.Meta{}, ErrRestoreIncomplete
		case journal && attempt == 0:
			if err := s.recoverJournal(); err != nil {
				return engine.Meta{}, fmt.Errorf("storage: finish interrupted batch: %w", err)
			}
			continue
		case journal:
			return engine.Meta{}, errors.New("storage: interrupted batch is still pending after recovery")
		}
		return m, nil
	}
}

func has(txn *badger.Txn, key []byte) (bool, error) {
	_, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

const metaLen = 8 + 8 + 32

func encodeMeta(m engine.Meta) []byte { return appendMeta(make([]byte, 0, metaLen), m) }

func appendMeta(b []byte, m engine.Meta) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Index)
	b = binary.BigEndian.AppendUint64(b, uint64(m.At))
	return append(b, m.Hash[:]...)
}

func decodeMeta(v []byte) (engine.Meta, error) {
	var m engine.Meta
	if len(v) != metaLen {
		return m, fmt.Errorf("%w: meta record is %d bytes", errCorruptKey, len(v))
	}
	m.Index = binary.BigEndian.Uint64(v)
	m.At = int64(binary.BigEndian.Uint64(v[8:]))
	copy(m.Hash[:], v[16:])
	return m, nil
}

// NewBatch starts an atomic write. Nothing reaches Badger before Commit.
func (s *ShardStore) NewBatch() engine.Batch {
	b := &batch{s: s, mem: arenaPool.Get().(*arena)}
	if p, ok := opsPool.Get().(*[]op); ok {
		b.ops = (*p)[:0]
	}
	return b
}

// release returns the arena to the pool once nothing refers to its slices:
// the ops are cleared or recycled, and Badger is done with them (see arena).
func (b *batch) release() {
	if b.mem != nil {
		b.mem.reset()
		arenaPool.Put(b.mem)
		b.mem = nil
	}
}

// opsPool recycles the op lists of finished batches: an entry of a few
// hundred commands writes a thousand ops or more, and growing the list from
// empty each time was a good part of the engine's garbage.
var opsPool sync.Pool

// maxPooledOps bounds the lists kept, so one huge batch does not pin memory.
const maxPooledOps = 1 << 14

func recycleOps(ops []op) {
	if cap(ops) == 0 || cap(ops) > maxPooledOps {
		return
	}
	clear(ops) // drop the keys and values for the collector
	ops = ops[:0]
	opsPool.Put(&ops)
}

// batch buffers the writes of one log entry. Timer writes are kept as
// operations and resolved at Commit against the stored timer, so the due index
// and the by-entity record never disagree whatever the caller passes.
type batch struct {
	s      *ShardStore
	ops    []op
	timers []timerOp
	done   bool
	rd     *badger.Txn // read snapshot for the engine's lookups, opened lazily
	// kb holds the key of the current lookup: Badger keeps no reference to
	// it once the value is copied, so one buffer serves them all.
	kb []byte
	// outbox holds the rows of one log index not yet packed into ops.
	outbox      []OutboxRow
	outboxBytes int
	// mem holds the batch's own keys and values (not the caller's slices)
	// until Commit or Discard.
	mem *arena
	// keep holds the event rows a history sweep in this batch must write out
	// in full before it deletes the records they refer to (DeleteHistory).
	keep []keptRow
	// cmdEvents are the event records written since the last result: those
	// a result may refer to (refResult); an event's outbox row repeats the
	// last of them (PutOutbox).
	cmdEvents []pendingEvent
	// keepResults are the results, in full, that referred to records a
	// history sweep in this batch deletes.
	keepResults []op
	// outboxLow is the first pending outbox position, once looked up
	// (outboxLowKnown); none when the outbox is empty.
	outboxLow      engine.Position
	outboxLowNone  bool
	outboxLowKnown bool
}

// keptRow is an event row, in full, that replaces its reference in the
// outbox value stored under key when the batch commits.
type keptRow struct {
	key, val []byte // the value as committed before the batch
	row      OutboxRow
}

var _ engine.BatchReader = (*batch)(nil)

// reader is one read transaction for all the lookups of an entry: Badger
// makes every new read transaction wait until all earlier commits of the
// database (every shard's) are done, so one per lookup would queue each shard
// behind the others. The engine is the shard's only writer and commits the
// previous entry before it starts the next, so this snapshot sees everything
// the lookups need.
func (b *batch) reader() *badger.Txn {
	if b.rd == nil {
		b.rd = b.s.db().NewTransaction(false)
	}
	return b.rd
}

func (b *batch) closeReader() {
	if b.rd != nil {
		b.rd.Discard()
		b.rd = nil
	}
}

// Entity implements engine.BatchReader.
func (b *batch) Entity(addr actor.Address) (engine.Entity, error) {
	b.kb = appendAddrKey(appendTagPrefix(b.kb[:0], b.s.id, tagEntity), addr)
	return b.s.entityIn(b.reader(), b.kb, addr)
}

// Result implements engine.BatchReader.
func (b *batch) Result(addr actor.Address, key string) ([]byte, bool, error) {
	b.kb = append(appendAddrKey(appendTagPrefix(b.kb[:0], b.s.id, tagResult), addr), key...)
	if !b.s.results.mayHave(b.kb, b.s.resultKeys) {
		return nil, false, nil
	}
	v, ok, err := b.s.copyIn(b.reader(), b.kb)
	if ok && err == nil {
		v, err = b.s.expandResult(b.reader(), b.kb[shardPrefixLen+1:len(b.kb)-len(key)], v)
	}
	return v, ok && err == nil, err
}

// Timer implements engine.BatchReader.
func (b *batch) Timer(addr actor.Address, name string) (engine.Timer, bool, error) {
	return b.s.timerIn(b.reader(), addr, name)
}

// DueTimers implements engine.BatchReader.
func (b *batch) DueTimers(upTo int64, limit int) ([]engine.Timer, error) {
	if low, _ := b.s.due.read(); upTo < low {
		return nil, nil // as dueTimersIn would, without opening the snapshot
	}
	return b.s.dueTimersIn(b.reader(), upTo, limit)
}

type timerOp struct {
	t   engine.Timer
	del bool
}

func (b *batch) put(key, val []byte) { b.ops = append(b.ops, op{key: key, val: val}) }

// addrKey is addrPrefix in the batch's arena.
func (b *batch) addrKey(tag byte, addr actor.Address, extra int) []byte {
	k := b.mem.Make(0, shardPrefixLen+1+addrKeyLen(addr)+extra)
	return appendAddrKey(appendTagPrefix(k, b.s.id, tag), addr)
}

// PutEntity stores the entity's version and state.
func (b *batch) PutEntity(addr actor.Address, e engine.Entity) {
	v := b.mem.Make(8+len(e.State), 0)
	binary.BigEndian.PutUint64(v, e.Version)
	copy(v[8:], e.State)
	b.put(b.addrKey(tagEntity, addr, 0), v)
}

// AppendHistory stores an event or rejection at its log position.
func (b *batch) AppendHistory(addr actor.Address, pos engine.Position, kind engine.HistoryKind, data []byte) {
	v := b.mem.Make(1+len(data), 0)
	v[0] = byte(kind)
	copy(v[1:], data)
	key := appendPos(b.addrKey(tagHistory, addr, 12), pos)
	b.put(key, v)
	if kind == engine.HistoryEvent {
		b.cmdEvents = append(b.cmdEvents, pendingEvent{op: len(b.ops) - 1, pos: pos, addr: key[shardPrefixLen+1 : len(key)-12], data: v[1:]})
	}
}

// DeleteHistory removes the history record at pos. An event row still
// waiting in the outbox may refer to the record (see outboxEventRef): it is
// written out in full first, so the relay publishes what it always would.
func (b *batch) DeleteHistory(addr actor.Address, pos engine.Position) {
	key := appendPos(b.addrKey(tagHistory, addr, 12), pos)
	b.keepReferringRow(key, pos)
	b.keepReferringResult(key, pos)
	b.ops = append(b.ops, op{key: key, del: true})
}

// keepReferringRow records the event row at pos in full if a pending outbox
// value holds it as a reference to the history record under histKey.
// Sweeps delete old records and the outbox holds the newest rows, so nearly
// always the first check ends it.
func (b *batch) keepReferringRow(histKey []byte, pos engine.Position) {
	if !b.outboxLowKnown {
		b.outboxLowKnown = true
		b.outboxLow, b.outboxLowNone = b.s.firstOutboxPos(b.reader())
	}
	if b.outboxLowNone || b.outboxLow.After(pos) {
		return
	}
	txn := b.reader()
	p := tagPrefix(b.s.id, tagOutbox)
	iopt := badger.DefaultIteratorOptions
	iopt.Prefix = p
	it := txn.NewIterator(iopt)
	defer it.Close()
	it.Seek(outboxKey(b.s.id, pos))
	if !it.Valid() {
		return
	}
	last, ok := parsePos(it.Item().Key()[len(p):])
	if !ok || last.Index != pos.Index {
		return
	}
	val, err := it.Item().ValueCopy(nil)
	if err != nil {
		return // unreadable: the relay's read fails on it too
	}
	rows, err := unpackOutbox(last, val)
	if err != nil {
		return
	}
	for _, r := range rows {
		if r.Pos != pos || len(r.Data) == 0 || r.Data[0] != outboxEventRef {
			continue
		}
		full, err := b.s.expandOutboxRow(txn, r)
		if err == nil {
			b.keep = append(b.keep, keptRow{key: it.Item().KeyCopy(nil), val: val, row: full})
		}
		return
	}
}

// applyKept writes what keepReferringRow and keepReferringResult recorded:
// each row into the outbox value that holds its reference, each result in
// full, over whatever the batch itself did to those keys (a value the batch
// deletes stays deleted: its rows were published, or the result expired; a
// result the batch replaced is a new command's).
func (b *batch) applyKept() error {
	if len(b.keep) == 0 && len(b.keepResults) == 0 {
		return nil
	}
	last := make(map[string]int, len(b.ops)) // key -> its last op in the batch
	for i, o := range b.ops {
		last[string(o.key)] = i
	}
	put := func(key, val []byte) {
		b.put(key, val)
		last[string(key)] = len(b.ops) - 1
	}
	for _, k := range b.keepResults {
		if _, touched := last[string(k.key)]; !touched {
			put(k.key, k.val)
		}
	}
	b.keepResults = nil
	for _, k := range b.keep {
		val := k.val
		if i, ok := last[string(k.key)]; ok {
			if b.ops[i].del {
				continue
			}
			val = b.ops[i].val
		}
		pos, ok := parsePos(k.key[shardPrefixLen+1:])
		if !ok {
			return fmt.Errorf("%w: outbox %x", errCorruptKey, k.key)
		}
		rows, err := unpackOutbox(pos, val)
		if err != nil {
			return err
		}
		for i := range rows {
			if rows[i].Pos == k.row.Pos && len(rows[i].Data) > 0 && rows[i].Data[0] == outboxEventRef {
				rows[i] = k.row
			}
		}
		put(k.key, encodeOutbox(rows))
	}
	b.keep = nil
	return nil
}

// PutResult stores the encoded result under (addr, idempotency key).
// The key enters the shard's result filter now, before the batch commits:
// see resultFilter.
func (b *batch) PutResult(addr actor.Address, key string, data []byte) {
	k := append(b.addrKey(tagResult, addr, len(key)), key...)
	b.s.results.add(k)
	if ref := b.refResult(k[shardPrefixLen+1:len(k)-len(key)], key, data); ref != nil {
		data = ref
	}
	b.cmdEvents = b.cmdEvents[:0]
	b.put(k, data)
}

// PutOutbox stores an encoded command for delivery. Rows of one log index
// are packed (see packOutbox) when the batch commits.
func (b *batch) PutOutbox(pos engine.Position, data []byte) {
	if n := len(b.cmdEvents); n > 0 && len(data) > 0 && data[0] == engine.OutboxEvent {
		if ev := &b.cmdEvents[n-1]; ev.pos == pos && bytes.Equal(data[1:], ev.data) {
			// The event's history record, written just before: refer to it.
			data = append(append(b.mem.Make(0, 1+len(ev.addr)), outboxEventRef), ev.addr...)
		}
	}
	if len(b.outbox) > 0 && (pos.Index != b.outbox[0].Pos.Index || b.outboxBytes+len(data) > maxPackedOutbox) {
		b.flushOutbox()
	}
	b.outbox = append(b.outbox, OutboxRow{Pos: pos, Data: data})
	b.outboxBytes += len(data)
}

// flushOutbox writes the pending outbox rows as one Badger value.
func (b *batch) flushOutbox() {
	switch len(b.outbox) {
	case 0:
		return
	case 1:
		b.put(b.outboxKey(b.outbox[0].Pos), b.outbox[0].Data)
	default:
		last := b.outbox[len(b.outbox)-1].Pos
		b.put(b.outboxKey(last), appendPackedOutbox(b.mem.Make(0, packedOutboxSize(b.outbox)), b.outbox))
	}
	clear(b.outbox)
	b.outbox, b.outboxBytes = b.outbox[:0], 0
}

// outboxKey is outboxKey in the batch's arena.
func (b *batch) outboxKey(p engine.Position) []byte {
	return appendPos(appendTagPrefix(b.mem.Make(0, shardPrefixLen+1+12), b.s.id, tagOutbox), p)
}

// DeleteOutbox deletes every outbox row at or before upTo, scanning from
// from (rows before it were deleted by earlier entries). The rows come
// from the batch's read snapshot, which holds every entry applied before this
// one: the rows a relay can have published. A packed value is stored under
// its last row's position, so comparing keys deletes exactly the values whose
// every row is at or before upTo; the first value after them may still hold
// some such rows, and is rewritten without them.
func (b *batch) DeleteOutbox(from, upTo engine.Position) {
	p := tagPrefix(b.s.id, tagOutbox)
	start, end := outboxKey(b.s.id, from), outboxKey(b.s.id, upTo)
	iopt := badger.DefaultIteratorOptions
	iopt.Prefix = p
	iopt.PrefetchValues = false
	it := b.reader().NewIterator(iopt)
	defer it.Close()
	it.Seek(start)
	for ; it.Valid() && bytes.Compare(it.Item().Key(), end) <= 0; it.Next() {
		b.ops = append(b.ops, op{key: it.Item().KeyCopy(nil), del: true})
	}
	if !it.Valid() {
		return
	}
	v, err := it.Item().ValueCopy(nil)
	if err != nil || len(v) == 0 || v[0] != outboxPacked {
		// Unpacked, or unreadable: then the relay's read fails on it too
		// and nothing is lost by leaving it whole.
		return
	}
	key := it.Item().KeyCopy(nil)
	pos, ok := parsePos(key[len(p):])
	if !ok {
		return
	}
	rows, err := unpackOutbox(pos, v)
	if err != nil || len(rows) == 0 || rows[0].Pos.After(upTo) {
		return
	}
	keep := rows[:0]
	for _, r := range rows {
		if r.Pos.After(upTo) {
			keep = append(keep, r)
		}
	}
	if len(keep) == 1 {
		b.put(key, keep[0].Data)
		return
	}
	b.put(key, packOutbox(keep))
}

// PutTimer sets (or moves) the entity's timer.
func (b *batch) PutTimer(t engine.Timer) { b.timers = append(b.timers, timerOp{t: t}) }

// DeleteTimer removes the entity's timer of that name, wherever it is due.
func (b *batch) DeleteTimer(t engine.Timer) { b.timers = append(b.timers, timerOp{t: t, del: true}) }

// SetMeta stores the applied position and hash.
func (b *batch) SetMeta(m engine.Meta) {
	b.put(appendTagPrefix(b.mem.Make(0, shardPrefixLen+1), b.s.id, tagMeta), appendMeta(b.mem.Make(0, metaLen), m))
}

// Discard drops the batch; nothing of it was written.
func (b *batch) Discard() {
	b.closeReader()
	if !b.done {
		recycleOps(b.ops)
	}
	b.done = true
	b.ops, b.timers, b.outbox = nil, nil, nil
	b.release()
}

// Commit writes the batch atomically. A batch that fits one Badger
// transaction (DB.BatchLimits) is one transaction. A larger one goes through
// the shard's journal: its writes are staged, a commit record is written and
// synced, then they are applied; a crash in between is finished by Open or
// Meta, so readers after recovery see all of the batch or none of it (readers
// on other goroutines during such a commit may see part of it).
func (b *batch) Commit() error {
	if b.done {
		return errBatchDone
	}
	b.flushOutbox()
	if err := b.applyKept(); err != nil {
		b.Discard()
		return fmt.Errorf("storage: shard %d: commit: %w", b.s.id, err)
	}
	b.closeReader()
	b.done = true
	var ops []op
	err := b.s.db().Update(func(txn *badger.Txn) error {
		tops, err := b.s.resolveTimers(txn, b.timers)
		if err != nil {
			return err
		}
		ops = append(b.ops, tops...)
		ents := b.mem.entries(len(ops))
		for i, o := range ops {
			if err := o.applyEntry(txn, &ents[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, badger.ErrTxnTooBig) {
		err = b.s.commitLarge(ops)
		if err != nil {
			// Part of the journal may have been applied: forget the bound.
			b.s.due.reset()
		}
	}
	if err == nil {
		for _, to := range b.timers {
			if !to.del {
				b.s.due.lower(to.t.At)
			}
		}
	}
	// Badger is done with the keys and values once Update or the journal
	// returned; the list itself can serve the next batch.
	if len(ops) >= len(b.ops) {
		recycleOps(ops)
	} else {
		recycleOps(b.ops)
	}
	b.ops, b.timers = nil, nil
	b.release()
	if err != nil {
		return fmt.Errorf("storage: shard %d: commit: %w", b.s.id, err)
	}
	return nil
}

// resolveTimers turns timer operations into key writes, reading the stored
// by-entity record (and the batch's own earlier timer writes) to find the due
// entry a put moves or a delete removes.
func (s *ShardStore) resolveTimers(txn *badger.Txn, tops []timerOp) ([]op, error) {
	if len(tops) == 0 {
		return nil, nil
	}
	type state struct {
		at  int64
		set bool
	}
	cur := map[string]state{}
	var ops []op
	for _, to := range tops {
		addr := to.t.Address.Key()
		ek := timerEntKey(s.id, addr, to.t.Name)
		st, known := cur[string(ek)]
		if !known {
			item, err := txn.Get(ek)
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
			case err != nil:
				return nil, err
			default:
				err = item.Value(func(v []byte) error {
					if len(v) < 8 {
						return fmt.Errorf("%w: timer record is %d bytes", errCorruptKey, len(v))
					}
					st = state{at: int64(binary.BigEndian.Uint64(v)), set: true}
					return nil
				})
				if err != nil {
					return nil, err
				}
			}
		}
		if st.set && (to.del || st.at != to.t.At) {
			ops = append(ops, op{key: timerDueKey(s.id, st.at, addr, to.t.Name), del: true})
		}
		if to.del {
			if st.set {
				ops = append(ops, op{key: ek, del: true})
			}
			cur[string(ek)] = state{}
			continue
		}
		v := make([]byte, 8+len(to.t.Payload))
		binary.BigEndian.PutUint64(v, uint64(to.t.At))
		copy(v[8:], to.t.Payload)
		ops = append(ops,
			op{key: timerDueKey(s.id, to.t.At, addr, to.t.Name), val: to.t.Payload},
			op{key: ek, val: v})
		cur[string(ek)] = state{at: to.t.At, set: true}
	}
	return ops, nil
}

// Journal of a large batch. Each staged op is: kind byte (1 put, 2 delete),
// uvarint key length, key, value.
const (
	journalPut byte = 1
	journalDel byte = 2
)

func journalKey(shard uint32, seq uint32) []byte {
	return binary.BigEndian.AppendUint32(keyBuf(shard, tagJournal, 4), seq)
}

func encodeJournalOp(o op) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(o.key)+len(o.val))
	if o.del {
		b = append(b, journalDel)
	} else {
		b = append(b, journalPut)
	}
	b = binary.AppendUvarint(b, uint64(len(o.key)))
	b = append(b, o.key...)
	return append(b, o.val...)
}

func decodeJournalOp(v []byte) (op, error) {
	if len(v) < 2 || (v[0] != journalPut && v[0] != journalDel) {
		return op{}, fmt.Errorf("%w: journal record", errCorruptKey)
	}
	n, w := binary.Uvarint(v[1:])
	if w <= 0 || n > uint64(len(v)-1-w) {
		return op{}, fmt.Errorf("%w: journal record", errCorruptKey)
	}
	rest := v[1+w:]
	o := op{key: rest[:n], del: v[0] == journalDel}
	if !o.del {
		o.val = rest[n:]
	}
	return o, nil
}

// commitLarge commits ops that exceed one transaction. The commit record is
// the atomic point: it is written only after every staged op is durable, and
// the real keys are touched only after it is durable.
func (s *ShardStore) commitLarge(ops []op) error {
	k := s.d.kv
	if err := s.clearJournal(); err != nil {
		return err
	}
	staged := make([]op, len(ops))
	for i, o := range ops {
		staged[i] = op{key: journalKey(s.id, uint32(i)), val: encodeJournalOp(o)}
	}
	if err := k.writeChunked(staged); err != nil {
		return fmt.Errorf("stage large batch: %w", err)
	}
	if err := k.sync(); err != nil {
		return err
	}
	err := k.db.Update(func(txn *badger.Txn) error {
		return txn.Set(tagPrefix(s.id, tagJournalCommit), binary.BigEndian.AppendUint32(nil, uint32(len(ops))))
	})
	if err != nil {
		return fmt.Errorf("commit large batch: %w", err)
	}
	if err := k.sync(); err != nil {
		return err
	}
	return s.finishJournal(ops)
}

// finishJournal applies a committed journal's ops and then removes the
// journal: the commit record first (so a crash never leaves a commit record
// over a partly deleted journal), then the staged ops.
func (s *ShardStore) finishJournal(ops []op) error {
	k := s.d.kv
	if err := k.writeChunked(ops); err != nil {
		return fmt.Errorf("apply large batch: %w", err)
	}
	if err := k.sync(); err != nil {
		return err
	}
	err := k.db.Update(func(txn *badger.Txn) error { return txn.Delete(tagPrefix(s.id, tagJournalCommit)) })
	if err != nil {
		return err
	}
	return s.clearJournal()
}

func (s *ShardStore) clearJournal() error {
	return s.d.kv.deleteKeys(tagPrefix(s.id, tagJournal), nil, nil)
}

// recoverJournal finishes a committed large batch, or drops the staged ops of
// one that never reached its commit record.
func (s *ShardStore) recoverJournal() error {
	var ops []op
	var want uint32
	var committed bool
	err := s.db().View(func(txn *badger.Txn) error {
		item, err := txn.Get(tagPrefix(s.id, tagJournalCommit))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		committed = true
		if err := item.Value(func(v []byte) error {
			if len(v) != 4 {
				return fmt.Errorf("%w: journal commit record", errCorruptKey)
			}
			want = binary.BigEndian.Uint32(v)
			return nil
		}); err != nil {
			return err
		}
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = tagPrefix(s.id, tagJournal)
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			o, err := decodeJournalOp(v)
			if err != nil {
				return err
			}
			ops = append(ops, o)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !committed {
		return s.clearJournal()
	}
	if uint32(len(ops)) != want {
		return fmt.Errorf("%w: journal holds %d ops, its commit record says %d", errCorruptKey, len(ops), want)
	}
	s.d.kv.log.Warn("finishing a large batch interrupted by a failure", "shard", s.id, "ops", len(ops))
	defer s.due.reset()
	defer s.results.reset()
	return s.finishJournal(ops)
}

// Clear deletes every key of the shard, for instance after the shard moved
// to other nodes. It is not atomic; it is meant for a shard no one uses.
func (s *ShardStore) Clear() error {
	s.results.reset()
	defer s.due.reset()
	defer s.results.reset()
	return s.d.kv.deleteKeys(shardPrefix(s.id), nil, nil)
}
