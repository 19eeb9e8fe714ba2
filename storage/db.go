package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// DB is a node's state store: one Badger database holding the state of every
// shard on the node, each under its own 4-byte key prefix. Commits are not
// fsynced one by one (the Raft log is the write-ahead log); Sync makes them
// durable, and the shard calls it before a snapshot lets Raft truncate the log.
type DB struct {
	kv *kv

	mu      sync.Mutex
	hints   map[uint32]*dueHint
	filters map[uint32]*resultFilter
	budget  *filterBudget
}

// Open opens or creates the state store in dir. Writes are not synced
// individually (SyncWrites=false): a lost suffix of them is re-applied from
// the Raft log after a restart. Open finishes any large batch whose commit a
// crash interrupted and warns about shards whose restore did not finish.
func Open(dir string, opts Options) (*DB, error) {
	k, err := openKV(dir, opts, false, magicState, "state")
	if err != nil {
		return nil, err
	}
	d := &DB{kv: k, hints: map[uint32]*dueHint{}, filters: map[uint32]*resultFilter{},
		budget: &filterBudget{max: k.opts.ResultFilterBytes}}
	removeStaleRestoreFiles(d.tempDir(), dir)
	if err := d.recover(); err != nil {
		_ = k.close()
		return nil, err
	}
	return d, nil
}

// Close closes the database. Stores and snapshots of its shards must not be
// used afterwards.
func (d *DB) Close() error { return d.kv.close() }

// Sync makes every committed batch of every shard durable. Badger's own
// DB.Sync reaches only the active memtable and the newest value-log file; this
// also syncs memtables waiting to be flushed and older value-log files.
func (d *DB) Sync() error { return d.kv.sync() }

// MemTableSize is the size of the database's memtables (see
// Options.SpreadMemTable).
func (d *DB) MemTableSize() int64 { return d.kv.opts.MemTableSize }

// Shard returns the store of one shard. It is cheap: the store is a view of
// the shard's key prefix.
func (d *DB) Shard(id uint32) *ShardStore {
	d.mu.Lock()
	defer d.mu.Unlock()
	h, ok := d.hints[id]
	if !ok {
		h = &dueHint{low: math.MinInt64}
		d.hints[id] = h
	}
	f, ok := d.filters[id]
	if !ok {
		f = newResultFilter(d.budget)
		d.filters[id] = f
	}
	return &ShardStore{d: d, id: id, due: h, results: f}
}

// dueHint remembers a lower bound of the due times of a shard's live timers,
// so DueTimers seeks past the tombstones that fired timers leave at the front
// of the due index (an LSM keeps them until compaction reaches the bottom
// level; 100k of them made each DueTimers call take ~30 ms). It only moves
// where the scan starts, never what it returns, so it cannot affect
// determinism as long as low never exceeds a live timer's due time:
//   - commits that put timers lower low (after they are visible) and bump gen;
//   - Restore, Clear and journal recovery reset it;
//   - DueTimers raises low to the first live due time it saw, but only if no
//     timer was put since it read gen (its view might predate the put).
type dueHint struct {
	mu  sync.Mutex
	low int64
	gen uint64
}

func (h *dueHint) read() (low int64, gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.low, h.gen
}

// lower records a committed timer due at at.
func (h *dueHint) lower(at int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.low = min(h.low, at)
	h.gen++
}

// raise records that no live timer is due before at, as seen by a reader
// that started at generation gen.
func (h *dueHint) raise(at int64, gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gen == gen && at > h.low {
		h.low = at
	}
}

func (h *dueHint) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.low = math.MinInt64
	h.gen++
}

// BatchLimits is the most one Badger transaction holds: bytes (keys plus
// values below 1 MiB; larger values count as a pointer) and entries. A Batch
// above either still commits atomically, through a slower journal.
func (d *DB) BatchLimits() (bytes, entries int64) {
	return d.kv.db.MaxBatchSize(), d.kv.db.MaxBatchCount()
}

func (d *DB) tempDir() string {
	if d.kv.opts.TempDir != "" {
		return d.kv.opts.TempDir
	}
	return d.kv.dir
}

// restoreFilePattern names the files Restore stages snapshots in.
const restoreFilePattern = "rhizon-restore-*.tmp"

// removeStaleRestoreFiles deletes staging files a crash left behind, but only
// in the database's own directory: a shared TempDir may hold another node's.
func removeStaleRestoreFiles(tmp, dir string) {
	if filepath.Clean(tmp) != filepath.Clean(dir) {
		return
	}
	matches, _ := filepath.Glob(filepath.Join(dir, restoreFilePattern))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}

// recover visits every shard present in the database once (one seek per
// shard, not a scan) to finish interrupted large batches.
func (d *DB) recover() error {
	var shards []uint32
	err := d.kv.db.View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.PrefetchValues = false
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			k := it.Item().Key()
			if len(k) < shardPrefixLen {
				return fmt.Errorf("%w: %x", errCorruptKey, k)
			}
			id := binary.BigEndian.Uint32(k)
			shards = append(shards, id)
			next := prefixEnd(shardPrefix(id))
			if next == nil {
				break
			}
			it.Seek(next)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: scan shards: %w", err)
	}
	for _, id := range shards {
		s := d.Shard(id)
		if err := s.recoverJournal(); err != nil {
			return fmt.Errorf("storage: shard %d: finish interrupted batch: %w", id, err)
		}
		if _, err := s.Meta(); errors.Is(err, ErrRestoreIncomplete) {
			d.kv.log.Warn("shard restore did not finish; it needs a snapshot", "shard", id)
		}
	}
	return nil
}
