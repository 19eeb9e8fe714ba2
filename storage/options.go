package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options tunes a Badger database. The zero value is valid: every zero field
// takes the default named in its comment, chosen for a small footprint (one
// node runs many shards in two databases, not one database per shard).
type Options struct {
	// Logger receives Badger's warnings and errors; Badger's info and debug
	// chatter is dropped. Nil means slog.Default().
	Logger *slog.Logger

	// MemTableSize is the size of one memtable (default 64 MiB). It also
	// bounds one atomic write: Badger refuses a transaction above 15% of it
	// (see DB.BatchLimits). Every flushed memtable is an L0 table, and every
	// few of them an L0->L1 compaction rewrites the overlapping L1 data:
	// smaller memtables compact often enough under load to take the CPU the
	// apply loop needs (bench/MEASUREMENTS.md, "Figures once kept in code").
	MemTableSize int64
	// SpreadMemTable makes a new database's memtables up to MemTableSpread
	// larger than MemTableSize, at random. The replicas of a Raft group
	// write the same keys at the same moments, so with equal memtables they
	// flush them (and start the compactions that follow) together, and all
	// of a group's replicas stall at once: on the 2-core benchmark box one
	// flush on each of three nodes at once took the cluster's p99 from about
	// 50 ms to 170-460 ms (bench/MEASUREMENTS.md). A node sets it; only the
	// physical layout depends on it, never what a batch reads or commits.
	// The size drawn is kept in the database's directory (see memTableFile)
	// and used by every later open.
	SpreadMemTable bool
	// NumMemtables is how many memtables may exist before writes stall
	// (default 3).
	NumMemtables int
	// NumCompactors is the number of compaction goroutines (default 2; Badger
	// refuses 1).
	NumCompactors int
	// BlockCacheSize caches decompressed SST blocks (default 16 MiB).
	BlockCacheSize int64
	// IndexCacheSize caches SST indexes and bloom filters (default 8 MiB).
	// Unlike Badger's default of 0 it bounds index memory.
	IndexCacheSize int64
	// ValueLogFileSize is the size of one value-log file (default 64 MiB).
	// Only values of 1 MiB and more go there, so files stay small.
	ValueLogFileSize int64
	// GCInterval is how often value-log garbage is collected (default 10
	// minutes; negative disables). Deleted large values are only reclaimed
	// by this.
	GCInterval time.Duration
	// ResultFilterBytes bounds the memory of the Bloom filters that spare
	// idempotency lookups a Badger read, all shards together (default 64
	// MiB, 1.5 bytes per stored result; negative: no filters). A
	// shard whose filter would exceed it looks every key up in Badger.
	ResultFilterBytes int64
	// TempDir is where Restore stages an incoming snapshot while it verifies
	// it (default: the database directory, which holds the data anyway).
	TempDir string
}

// Defaults of Options.
const (
	DefaultMemTableSize     = 64 << 20
	DefaultNumMemtables     = 3
	DefaultNumCompactors    = 2
	DefaultBlockCacheSize   = 16 << 20
	DefaultIndexCacheSize   = 8 << 20
	DefaultValueLogFileSize = 64 << 20
	DefaultGCInterval       = 10 * time.Minute
	DefaultResultFilter     = 64 << 20

	// MemTableSpread is how much larger SpreadMemTable may make the
	// memtables (a fraction of MemTableSize). Only larger: a memtable's
	// write-ahead file must fit the arena of any later open (memTableFile).
	MemTableSpread = 0.4
)

// maxValueThreshold is Badger's largest value threshold: values below it live
// in the LSM tree and the memtable WAL, larger ones in the value log. Keeping
// it at the maximum keeps events out of the value log (TESTING.md §4).
const maxValueThreshold = 1 << 20

// Badger "external magic" numbers, stored in the MANIFEST, so that a state
// directory can never be opened as a Raft directory or the other way round.
const (
	magicState uint16 = 0x5253 // "RS"
	magicRaft  uint16 = 0x5252 // "RR"
)

func (o Options) withDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.MemTableSize < 1<<20 {
		return o, fmt.Errorf("storage: MemTableSize %d is below 1 MiB", o.MemTableSize)
	}
	if o.NumMemtables == 0 {
		o.NumMemtables = DefaultNumMemtables
	}
	if o.NumCompactors == 0 {
		o.NumCompactors = DefaultNumCompactors
	}
	if o.NumCompactors < 2 {
		return o, fmt.Errorf("storage: NumCompactors must be at least 2, not %d", o.NumCompactors)
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = DefaultBlockCacheSize
	}
	if o.IndexCacheSize == 0 {
		o.IndexCacheSize = DefaultIndexCacheSize
	}
	if o.ValueLogFileSize == 0 {
		o.ValueLogFileSize = DefaultValueLogFileSize
	}
	if o.GCInterval == 0 {
		o.GCInterval = DefaultGCInterval
	}
	if o.ResultFilterBytes == 0 {
		o.ResultFilterBytes = DefaultResultFilter
	}
	return o, nil
}

// spreadSize maps u in [0, 1) to a size up to MemTableSpread larger.
func spreadSize(size int64, u float64) int64 {
	return int64(float64(size) * (1 + MemTableSpread*u))
}

// memTableFile, in a database's directory, records the largest memtable
// size it was opened with. Badger replays an unflushed memtable's
// write-ahead file (after a crash) into an arena of the size it is opened
// with, and ends the process if the file holds more; so once a size is
// drawn (SpreadMemTable), every later open, by the node or an offline tool,
// uses at least that size.
const memTableFile = "RHIZON_MEMTABLE"

// memTableFor settles the memtable size of the database in dir: the
// recorded size if larger than asked, else the size asked (spread, for a
// database that has none recorded, with SpreadMemTable). The size is
// recorded, durably, before Badger writes with it.
func (o Options) memTableFor(dir string) (Options, error) {
	path := filepath.Join(dir, memTableFile)
	var stored int64
	switch b, err := os.ReadFile(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return o, fmt.Errorf("storage: %w", err)
	default:
		if stored, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil || stored < 1<<20 {
			return o, fmt.Errorf("storage: %s holds %q, not a memtable size", path, b)
		}
	}
	switch {
	case stored >= o.MemTableSize:
		o.MemTableSize = stored
		return o, nil
	case stored == 0 && o.SpreadMemTable:
		o.MemTableSize = spreadSize(o.MemTableSize, rand.Float64())
	case stored == 0:
		return o, nil // nothing drawn here, ever: the size asked is the size written
	}
	if err := writeFileSynced(path, []byte(strconv.FormatInt(o.MemTableSize, 10)+"\n")); err != nil {
		return o, fmt.Errorf("storage: record memtable size: %w", err)
	}
	return o, nil
}

// writeFileSynced replaces path with data through a synced temporary file
// and syncs the directory.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return fsyncPath(filepath.Dir(path))
}

// maxTxnBytes is Badger's transaction size limit for a memtable size.
func maxTxnBytes(memTableSize int64) int64 { return memTableSize * 15 / 100 }

// badgerOptions builds Badger's options. sync says whether every commit is
// fsynced before it returns.
func (o Options) badgerOptions(dir string, sync bool, magic uint16, name string) badger.Options {
	// A value at the threshold counts only as a pointer toward the transaction
	// limit; half the limit keeps every single value committable.
	threshold := min(int64(maxValueThreshold), maxTxnBytes(o.MemTableSize)/2)
	return badger.DefaultOptions(dir).
		WithSyncWrites(sync).
		WithLogger(badgerLogger{l: o.Logger.With("component", "badger", "db", name)}).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(o.NumMemtables).
		WithNumCompactors(o.NumCompactors).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(o.IndexCacheSize).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithValueThreshold(threshold).
		// Every shard writes only its own prefix and the engine is the only
		// writer of a shard: conflict detection would cost and never fire.
		WithDetectConflicts(false).
		WithVerifyValueChecksum(true).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithExternalMagic(magic)
}

// badgerLogger routes Badger's log to slog at warn and above only.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, args ...any) { b.log(slog.LevelError, f, args) }

func (b badgerLogger) Warningf(f string, args ...any) { b.log(slog.LevelWarn, f, args) }

func (badgerLogger) Infof(string, ...any) {}

func (badgerLogger) Debugf(string, ...any) {}

func (b badgerLogger) log(level slog.Level, f string, args []any) {
	ctx := context.Background()
	if !b.l.Enabled(ctx, level) {
		return
	}
	b.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(f, args...)))
}
