package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// Before the write-ahead log, a node kept its Raft store in a Badger
// database in the same directory. Opening such a directory copies every
// shard's log and stable values into a new log in wal.tmp, syncs it and
// renames it to wal: from then on the log is authoritative, and the Badger
// files are removed (again on the next open, if a crash interrupts that).

// hasBadger reports whether dir holds a Badger database.
func hasBadger(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "MANIFEST"))
	return err == nil
}

func migrateBadger(dir, walDir string, opts Options, segSize int64) error {
	opts.GCInterval = -1
	k, err := openKV(dir, opts, true, magicRaft, "raft")
	if err != nil {
		return err
	}
	defer func() { _ = k.close() }()
	tmp := walDir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	d, err := openWAL(tmp, opts, segSize)
	if err != nil {
		return err
	}
	err = copyBadgerRaft(k.db, d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("storage: copy the Badger raft store of %s into its log: %w", dir, err)
	}
	if err := fsyncPath(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, walDir); err != nil {
		return err
	}
	if err := fsyncPath(dir); err != nil {
		return err
	}
	k.log.Info("moved the raft store from Badger to the write-ahead log", "dir", walDir)
	if err := k.close(); err != nil {
		return err
	}
	return removeBadgerFiles(dir)
}

// copyBadgerRaft stores every key of the old layout (shard u32 | tag | rest)
// in d, one StoreLogs per shard and few MiB.
func copyBadgerRaft(db *badger.DB, d *RaftDB) error {
	var batch []*raft.Log
	var batchShard uint32
	var size int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := d.Shard(batchShard).StoreLogs(batch)
		batch, size = batch[:0], 0
		return err
	}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().Key()
			if len(key) < shardPrefixLen+1 {
				return fmt.Errorf("%w: raft store key %x", errCorruptKey, key)
			}
			shard, tag, rest := binary.BigEndian.Uint32(key), key[shardPrefixLen], key[shardPrefixLen+1:]
			val, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			switch tag {
			case tagRaftLog:
				if len(rest) != 8 {
					return fmt.Errorf("%w: raft log key %x", errCorruptKey, key)
				}
				l := new(raft.Log)
				if err := decodeLog(val, l); err != nil {
					return fmt.Errorf("shard %d raft log %d: %w", shard, binary.BigEndian.Uint64(rest), err)
				}
				if shard != batchShard || size > 4<<20 {
					if err := flush(); err != nil {
						return err
					}
				}
				batchShard = shard
				batch = append(batch, l)
				size += len(val)
			case tagRaftStable:
				if err := d.Shard(shard).Set(rest, val); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%w: raft store key %x", errCorruptKey, key)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// removeMigratedBadger removes what is left of a migrated Badger raft store
// in dir (a crash interrupted the removal), after checking with Badger that
// it is one.
func removeMigratedBadger(dir string, opts Options) error {
	if !hasBadger(dir) {
		return nil
	}
	opts.GCInterval = -1
	k, err := openKV(dir, opts, true, magicRaft, "raft")
	if err != nil {
		return err
	}
	if err := k.close(); err != nil {
		return err
	}
	return removeBadgerFiles(dir)
}

// removeBadgerFiles removes the files of a Badger database from dir, and
// only those.
func removeBadgerFiles(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, de := range des {
		name := de.Name()
		switch {
		case name == "MANIFEST", name == "KEYREGISTRY", name == "REWRITE-KEYREGISTRY", name == "DISCARD", name == "LOCK",
			strings.HasSuffix(name, ".sst"), strings.HasSuffix(name, ".vlog"), strings.HasSuffix(name, ".mem"):
		default:
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed = true
	}
	if removed {
		return fsyncPath(dir)
	}
	return nil
}
