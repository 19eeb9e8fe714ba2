package storage

import (
	"io"
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// testOptions follows TESTING.md §7.7: small memtables and caches, and no
// background GC so tests are quiet.
func testOptions() Options {
	return Options{
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		MemTableSize:   8 << 20,
		BlockCacheSize: 1 << 20,
		IndexCacheSize: 1 << 20,
		GCInterval:     -1,
	}
}

func openDB(t testing.TB, dir string) *DB {
	t.Helper()
	db, err := Open(dir, testOptions())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func openRaftDB(t testing.TB, dir string) *RaftDB {
	t.Helper()
	db, err := OpenRaft(dir, testOptions())
	if err != nil {
		t.Fatalf("OpenRaft: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func addr(tenant, id string) actor.Address {
	return actor.Address{Tenant: tenant, Workspace: "ws", ActorType: "counter", EntityID: id}
}

func commit(t testing.TB, s *ShardStore, fn func(b engine.Batch)) {
	t.Helper()
	b := s.NewBatch()
	fn(b)
	if err := b.Commit(); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

// dump returns every key and value of the shard, keys without the shard id.
func dump(t testing.TB, s *ShardStore) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.db().View(func(txn *badger.Txn) error {
		iopt := badger.DefaultIteratorOptions
		iopt.Prefix = shardPrefix(s.id)
		it := txn.NewIterator(iopt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key()[shardPrefixLen:])] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

func equalDumps(t testing.TB, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("dump has %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Fatalf("key %x missing", k)
		}
		if g != v {
			t.Fatalf("key %x = %x, want %x", k, g, v)
		}
	}
}
