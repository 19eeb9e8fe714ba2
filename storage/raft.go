package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// ErrKeyNotFound is returned by LogStore.Get and GetUint64 for a key never
// set. hashicorp/raft recognises a missing key by err.Error() == "not found"
// (NewRaft, HasExistingState, requestVote in v1.8.0), the text raft-boltdb
// uses; keep it exactly.
var ErrKeyNotFound = errors.New("not found")

// RaftDB is a node's Raft storage: one Badger database holding the log and
// the stable store of every shard on the node, each under its own prefix.
type RaftDB struct {
	kv     *kv
	writes chan *logWrite
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// raftMetrics measure the group commit: how long each synced transaction
// takes and how many StoreLogs calls (and entries) share it. Their rates are
// the node's fsyncs per second, the first thing to look at when throughput
// disappoints.
var raftMetrics = newRaftLogMetrics()

type raftLogMetrics struct {
	syncDur   metric.Float64Histogram
	groupSize metric.Int64Histogram
	entries   metric.Int64Counter
}

func newRaftLogMetrics() *raftLogMetrics {
	meter := otel.Meter("github.com/rhizon/rhizon/storage")
	m := &raftLogMetrics{}
	m.syncDur, _ = meter.Float64Histogram("rhizon.raftlog.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Time of one synced Raft log transaction (all shards' pending entries)."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1))
	m.groupSize, _ = meter.Int64Histogram("rhizon.raftlog.commit.calls",
		metric.WithDescription("StoreLogs calls sharing one synced transaction."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128))
	m.entries, _ = meter.Int64Counter("rhizon.raftlog.entries", metric.WithDescription("Raft log entries stored."))
	return m
}

func (m *raftLogMetrics) record(start time.Time, calls, entries int) {
	ctx := context.Background()
	m.syncDur.Record(ctx, time.Since(start).Seconds())
	m.groupSize.Record(ctx, int64(calls))
	m.entries.Add(ctx, int64(entries))
}

// logWrite is one StoreLogs call waiting for the group commit.
type logWrite struct {
	ops  []op
	size int64
	err  chan error
}

// OpenRaft opens or creates the Raft store in dir with SyncWrites on: every
// StoreLogs and Set is fsynced before it returns, because Raft acknowledges
// entries and votes as soon as they do.
//
// Badger syncs once per transaction, and each shard's Raft leader writes its
// log one batch at a time, so with one transaction per call the node would
// manage about one fsync's worth of entries per shard in turn. StoreLogs calls
// of all shards therefore go through one committer that packs whatever is
// waiting into one transaction: one fsync for every shard's pending entries.
func OpenRaft(dir string, opts Options) (*RaftDB, error) {
	k, err := openKV(dir, opts, true, magicRaft, "raft")
	if err != nil {
		return nil, err
	}
	d := &RaftDB{kv: k, writes: make(chan *logWrite, 1024), stop: make(chan struct{}), done: make(chan struct{})}
	go d.commitLoop()
	return d, nil
}

// Close closes the database. Log stores of its shards must not be used
// afterwards.
func (d *RaftDB) Close() error {
	d.once.Do(func() {
		close(d.stop)
		<-d.done
	})
	return d.kv.close()
}

// commitLoop is the group committer: it takes one waiting write, adds every
// other one already waiting (up to one transaction's worth), commits them in
// one synced transaction and answers all of them.
func (d *RaftDB) commitLoop() {
	defer close(d.done)
	var group []*logWrite
	var ops []op
	for {
		var w *logWrite
		select {
		case w = <-d.writes:
		case <-d.stop:
			return
		}
		group, ops = append(group[:0], w), append(ops[:0], w.ops...)
		size := w.size
	drain:
		for size < d.kv.maxTxn/2 {
			select {
			case w = <-d.writes:
				group, ops = append(group, w), append(ops, w.ops...)
				size += w.size
			default:
				break drain
			}
		}
		start := time.Now()
		err := d.kv.writeChunked(ops)
		raftMetrics.record(start, len(group), len(ops))
		for _, w := range group {
			w.err <- err
		}
	}
}

// Shard returns the log and stable store of one shard.
func (d *RaftDB) Shard(id uint32) *LogStore { return &LogStore{d: d, id: id} }

// LogStore is one shard's Raft log and stable store in a RaftDB. It is safe
// for concurrent use, as Raft requires.
type LogStore struct {
	d  *RaftDB
	id uint32
}

var (
	_ raft.LogStore          = (*LogStore)(nil)
	_ raft.StableStore       = (*LogStore)(nil)
	_ raft.MonotonicLogStore = (*LogStore)(nil)
)

func (s *LogStore) db() *badger.DB { return s.d.kv.db }

func (s *LogStore) logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(keyBuf(s.id, tagRaftLog, 8), index)
}

func (s *LogStore) stableKey(key []byte) []byte {
	return append(keyBuf(s.id, tagRaftStable, len(key)), key...)
}

// IsMonotonic reports true: after restoring a snapshot Raft then deletes the
// whole log instead of leaving a gap before the next entry, so the store
// never holds entries older than the snapshot next to newer ones.
func (s *LogStore) IsMonotonic() bool { return true }

// FirstIndex returns the first index written; 0 for no entries.
func (s *LogStore) FirstIndex() (uint64, error) { return s.edgeIndex(false) }

// LastIndex returns the last index written; 0 for no entries.
func (s *LogStore) LastIndex() (uint64, error) { return s.edgeIndex(true) }

func (s *LogStore) edgeIndex(last bool) (uint64, error) {
	var idx uint64
	p := tagPrefix(s.id, tagRaftLog)
	err := s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.PrefetchValues = false
		iopt.Prefix = p
		iopt.Reverse = last
		it := txn.NewIterator(iopt)
		defer it.Close()
		if last {
			it.Seek(s.logKey(math.MaxUint64))
		} else {
			it.Rewind()
		}
		if !it.Valid() {
			return nil
		}
		k := it.Item().Key()
		if len(k) != len(p)+8 {
			return fmt.Errorf("%w: raft log %x", errCorruptKey, k)
		}
		idx = binary.BigEndian.Uint64(k[len(p):])
		return nil
	})
	return idx, err
}

// GetLog reads the entry at index; raft.ErrLogNotFound when there is none.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	return s.db().View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.logKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := decodeLog(v, log); err != nil {
			return fmt.Errorf("shard %d raft log %d: %w", s.id, index, err)
		}
		if log.Index != index {
			return fmt.Errorf("shard %d raft log %d: %w: entry says index %d", s.id, index, errCorruptKey, log.Index)
		}
		return nil
	})
}

// StoreLog stores one entry.
func (s *LogStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores entries in one synced transaction. A batch above Badger's
// transaction limit (15% of MemTableSize) is split into several, in index order,
// each synced: a crash between them keeps a prefix of the batch, which Raft
// handles as it does a crash before the call (it never counted them).
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	w := &logWrite{ops: make([]op, len(logs)), err: make(chan error, 1)}
	for i, l := range logs {
		w.ops[i] = op{key: s.logKey(l.Index), val: encodeLog(l)}
		w.size += int64(len(w.ops[i].key) + len(w.ops[i].val) + 32)
	}
	var err error
	select {
	case s.d.writes <- w:
		select {
		case err = <-w.err:
		case <-s.d.done:
			// The committer stopped; it may have answered just before.
			select {
			case err = <-w.err:
			default:
				err = ErrClosed
			}
		}
	case <-s.d.stop:
		err = ErrClosed
	}
	if err != nil {
		return fmt.Errorf("storage: shard %d: store raft logs %d-%d: %w", s.id, logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return nil
}

// DeleteRange deletes the entries from min to max inclusive. Raft deletes
// either a prefix (compaction) or a suffix (a conflicting tail); the keys are
// deleted from the end that keeps the log contiguous if the process dies
// halfway through a range too large for one transaction.
func (s *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	first, err := s.FirstIndex()
	if err != nil {
		return err
	}
	var keys [][]byte
	err = s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.PrefetchValues = false
		iopt.Prefix = tagPrefix(s.id, tagRaftLog)
		it := txn.NewIterator(iopt)
		defer it.Close()
		end := s.logKey(max)
		for it.Seek(s.logKey(min)); it.Valid(); it.Next() {
			k := it.Item().Key()
			if bytes.Compare(k, end) > 0 {
				break
			}
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	ops := make([]op, len(keys))
	for i, k := range keys {
		ops[i] = op{key: k, del: true}
	}
	if min > first {
		// A suffix: delete from the newest entry down.
		for i, j := 0, len(ops)-1; i < j; i, j = i+1, j-1 {
			ops[i], ops[j] = ops[j], ops[i]
		}
	}
	if err := s.d.kv.writeChunked(ops); err != nil {
		return fmt.Errorf("storage: shard %d: delete raft logs %d-%d: %w", s.id, min, max, err)
	}
	return nil
}

// Set stores a stable value.
func (s *LogStore) Set(key []byte, val []byte) error {
	return s.db().Update(func(txn *badger.Txn) error {
		return txn.Set(s.stableKey(key), val)
	})
}

// Get returns a stable value, or ErrKeyNotFound ("not found").
func (s *LogStore) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db().View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.stableKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrKeyNotFound
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// SetUint64 stores a stable uint64 (8 bytes big-endian).
func (s *LogStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a stable uint64, or 0 and ErrKeyNotFound ("not found").
func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("storage: shard %d: stable key %q holds %d bytes, not a uint64", s.id, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Raft log entry encoding, version 1:
//
//	version byte (1) | uvarint index | uvarint term | type byte
//	| varint appended_at (Unix ns; 0 is the zero time)
//	| uvarint len | data | uvarint len | extensions
//	| CRC-32C of everything before (4 bytes big-endian)
//
// The checksum turns a flipped bit on disk into a GetLog error, so a node
// refuses to start from a damaged log instead of serving it.
const logCodecVersion = 1

func encodeLog(l *raft.Log) []byte {
	n := 1 + 3*binary.MaxVarintLen64 + 1 + 2*binary.MaxVarintLen32 + len(l.Data) + len(l.Extensions) + 4
	b := make([]byte, 0, n)
	b = append(b, logCodecVersion)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var errBadLog = errors.New("storage: corrupt raft log entry")

// decodeLog decodes v into l; Data and Extensions alias v.
func decodeLog(v []byte, l *raft.Log) error {
	if len(v) < 5 {
		return errBadLog
	}
	body := v[:len(v)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(v[len(v)-4:]) {
		return fmt.Errorf("%w: checksum mismatch", errBadLog)
	}
	if body[0] != logCodecVersion {
		return fmt.Errorf("%w: codec version %d", errBadLog, body[0])
	}
	b := body[1:]
	uvar := func() (uint64, bool) {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return x, true
	}
	bytesField := func() ([]byte, bool) {
		n, ok := uvar()
		if !ok || n > uint64(len(b)) {
			return nil, false
		}
		out := b[:n:n]
		b = b[n:]
		if n == 0 {
			out = nil
		}
		return out, true
	}
	var ok bool
	var out raft.Log
	if out.Index, ok = uvar(); !ok {
		return errBadLog
	}
	if out.Term, ok = uvar(); !ok {
		return errBadLog
	}
	if len(b) < 1 {
		return errBadLog
	}
	out.Type = raft.LogType(b[0])
	b = b[1:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return errBadLog
	}
	b = b[n:]
	if at != 0 {
		out.AppendedAt = time.Unix(0, at).UTC()
	}
	if out.Data, ok = bytesField(); !ok {
		return errBadLog
	}
	if out.Extensions, ok = bytesField(); !ok {
		return errBadLog
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errBadLog, len(b))
	}
	*l = out
	return nil
}
