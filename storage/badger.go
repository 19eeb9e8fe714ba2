package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ErrClosed is returned by Sync after Close.
var ErrClosed = errors.New("storage: database closed")

// kv is what DB and RaftDB share: one Badger database, its value-log garbage
// collector and a Sync that reaches every file Badger may have left unsynced.
type kv struct {
	db     *badger.DB
	dir    string
	opts   Options
	log    *slog.Logger
	maxTxn int64

	mu     sync.RWMutex // held for reading by Sync, for writing by Close
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
	// gcPasses counts gcLoop's passes: a pass usually finds nothing to
	// collect, so this is the only sign, for a test, that one ran.
	gcPasses atomic.Uint64
}

func openKV(dir string, opts Options, sync bool, magic uint16, name string) (*kv, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", dir, err)
	}
	if opts, err = opts.memTableFor(dir); err != nil {
		return nil, err
	}
	db, err := badger.Open(opts.badgerOptions(dir, sync, magic, name))
	if err != nil {
		return nil, fmt.Errorf("storage: open %s database in %s: %w", name, dir, err)
	}
	k := &kv{
		db: db, dir: dir, opts: opts, maxTxn: maxTxnBytes(opts.MemTableSize),
		log: opts.Logger.With("component", "storage", "db", name), stop: make(chan struct{}),
	}
	if opts.GCInterval > 0 {
		k.wg.Add(1)
		go k.gcLoop(opts.GCInterval)
	}
	return k, nil
}

// gcLoop reclaims value-log space left by deleted or overwritten large values.
func (k *kv) gcLoop(every time.Duration) {
	defer k.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		for {
			err := k.db.RunValueLogGC(0.5)
			if err == nil {
				continue // a file was rewritten; there may be more
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				k.log.Warn("value log GC failed", "err", err)
			}
			break
		}
		k.gcPasses.Add(1)
	}
}

// close stops the garbage collector and closes Badger. It is idempotent.
func (k *kv) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	close(k.stop)
	k.wg.Wait()
	return k.db.Close()
}

// sync makes every write committed so far durable.
//
// Badger's own DB.Sync syncs only the active memtable's WAL and the newest
// value-log file. With SyncWrites off, memtables waiting to be flushed and
// value-log files rotated away are never synced until Badger flushes them, so
// a power loss could keep a later write and lose an earlier one. fsync on
// Linux writes back pages dirtied through a shared mmap (msync(MS_SYNC) is
// the same operation), so syncing every .mem and .vlog file, then the
// directory, closes that gap. Files that disappear meanwhile were flushed to
// synced SST files or garbage-collected.
func (k *kv) sync() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return ErrClosed
	}
	if err := k.db.Sync(); err != nil {
		return fmt.Errorf("storage: sync: %w", err)
	}
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return fmt.Errorf("storage: sync: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog") {
			continue
		}
		if err := fsyncPath(filepath.Join(k.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("storage: sync: %w", err)
		}
	}
	if err := fsyncPath(k.dir); err != nil {
		return fmt.Errorf("storage: sync: %w", err)
	}
	return nil
}

func fsyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// op is one resolved write: a put, or a delete when del is set.
type op struct {
	key, val []byte
	del      bool
}

func (o op) apply(txn *badger.Txn) error {
	if o.del {
		return withoutDump(txn.Delete(o.key))
	}
	return withoutDump(txn.Set(o.key, o.val))
}

// applyEntry is apply with the put's entry in e, which Badger keeps only
// until the transaction's Commit returns (Txn.Set would allocate it).
func (o op) applyEntry(txn *badger.Txn, e *badger.Entry) error {
	if o.del {
		return withoutDump(txn.Delete(o.key))
	}
	*e = badger.Entry{Key: o.key, Value: o.val}
	return withoutDump(txn.SetEntry(e))
}

// withoutDump drops the hex dump of the key or value that Badger appends to
// its size errors: a kilobyte of hex in the node's error log tells an
// operator nothing the first line does not.
func withoutDump(err error) error {
	if err == nil {
		return nil
	}
	if msg := err.Error(); strings.Contains(msg, "\n") {
		first, _, _ := strings.Cut(msg, "\n") // "Value with size N exceeded M limit. Value:"
		if i := strings.Index(first, " limit."); i >= 0 {
			first = first[:i+len(" limit")]
		}
		return fmt.Errorf("badger: %s", first)
	}
	return err
}

// writeChunked applies ops in order in as few transactions as fit under
// Badger's transaction limit. It is not atomic: a failure or crash leaves a
// prefix of ops applied. Callers that need more use it only where a prefix is
// safe or recoverable.
func (k *kv) writeChunked(ops []op) error {
	txn := k.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, o := range ops {
		err := o.apply(txn)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return err
			}
			txn = k.db.NewTransaction(true)
			err = o.apply(txn)
		}
		if err != nil {
			return err
		}
	}
	return txn.Commit()
}

// deleteKeys deletes every key with prefix p, up to and including until when
// it is not nil, for which keep (when not nil) returns false. It deletes in
// chunks while iterating a read snapshot, so it is not atomic (see
// writeChunked).
func (k *kv) deleteKeys(p, until []byte, keep func(key []byte) bool) error {
	return k.db.View(func(rd *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.PrefetchValues = false
		iopt.Prefix = p
		it := rd.NewIterator(iopt)
		defer it.Close()
		const chunk = 1024
		ops := make([]op, 0, chunk)
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().Key()
			if until != nil && bytes.Compare(key, until) > 0 {
				break
			}
			if keep != nil && keep(key) {
				continue
			}
			ops = append(ops, op{key: it.Item().KeyCopy(nil), del: true})
			if len(ops) == chunk {
				if err := k.writeChunked(ops); err != nil {
					return err
				}
				ops = ops[:0]
			}
		}
		if len(ops) == 0 {
			return nil
		}
		return k.writeChunked(ops)
	})
}
