package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/engine"
)

// fill writes n entries of varied records to s, as the engine would.
func fill(t testing.TB, s *ShardStore, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		commit(t, s, func(b engine.Batch) {
			a := addr(fmt.Sprintf("t%d", i%3), fmt.Sprintf("e%d", i%7))
			p := engine.Position{Index: uint64(i + 1), Ordinal: 1}
			b.PutEntity(a, engine.Entity{Version: uint64(i), State: []byte(fmt.Sprintf("state-%d", i))})
			b.AppendHistory(a, p, engine.HistoryEvent, []byte(fmt.Sprintf("ev-%d", i)))
			b.PutResult(a, fmt.Sprintf("k%d", i), []byte("r"))
			b.PutOutbox(engine.Position{Index: p.Index, Ordinal: 2}, []byte("o"))
			b.PutTimer(engine.Timer{Address: a, Name: "t", At: int64(i - 5), Payload: []byte("p")})
			b.SetMeta(engine.Meta{Index: p.Index, At: int64(i), Hash: [32]byte{byte(i)}})
		})
	}
}

func snapshotBytes(t testing.TB, s *ShardStore) ([]byte, map[string]string) {
	t.Helper()
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	want := dump(t, s)
	var buf bytes.Buffer
	n, err := snap.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v (buffer %d)", n, err, buf.Len())
	}
	return buf.Bytes(), want
}

func TestSnapshotIsPointInTime(t *testing.T) {
	src := openDB(t, t.TempDir()).Shard(1)
	fill(t, src, 0, 20)
	atSnapshot := dump(t, src)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if snap.Meta().Index != 20 {
		t.Fatalf("snapshot Meta = %+v", snap.Meta())
	}

	// Later applies run concurrently with Persist, as in hashicorp/raft.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fill(t, src, 20, 30)
		_ = src.d.Shard(1).Clear() // and even a wipe must not leak in
	}()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// A second WriteTo of the same snapshot gives the same bytes.
	var again bytes.Buffer
	if _, err := snap.WriteTo(&again); err != nil || !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Fatalf("second WriteTo differs (%v)", err)
	}
	snap.Release()
	snap.Release()
	if _, err := snap.WriteTo(io.Discard); err == nil {
		t.Fatal("WriteTo after Release succeeded")
	}

	// Restore into another shard id of another database, which has state of
	// its own that must disappear, next to a neighbour that must not.
	dst := openDB(t, t.TempDir())
	fill(t, dst.Shard(2), 100, 5)
	fill(t, dst.Shard(3), 200, 5)
	neighbour := dump(t, dst.Shard(3))
	if err := dst.Shard(2).Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	equalDumps(t, dump(t, dst.Shard(2)), atSnapshot)
	equalDumps(t, dump(t, dst.Shard(3)), neighbour)
	if m, err := dst.Shard(2).Meta(); err != nil || m.Index != 20 {
		t.Fatalf("restored Meta = %+v, %v", m, err)
	}
	if due, _ := dst.Shard(2).DueTimers(math.MaxInt64, 100); len(due) != 20 {
		t.Fatalf("restored DueTimers = %d", len(due))
	}
	// A snapshot of the restored shard is byte-identical: the format is
	// canonical and keys carry no shard id.
	if again, _ := snapshotBytes(t, dst.Shard(2)); !bytes.Equal(again, buf.Bytes()) {
		t.Fatal("snapshot of restored shard differs from the original snapshot")
	}
}

func TestSnapshotOfEmptyShard(t *testing.T) {
	db := openDB(t, t.TempDir())
	raw, _ := snapshotBytes(t, db.Shard(1))
	fill(t, db.Shard(2), 0, 3)
	if err := db.Shard(2).Restore(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	if d := dump(t, db.Shard(2)); len(d) != 0 {
		t.Fatalf("restoring an empty snapshot left %d keys", len(d))
	}
	if m, err := db.Shard(2).Meta(); err != nil || m != (engine.Meta{}) {
		t.Fatalf("Meta = %+v, %v", m, err)
	}
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	src := db.Shard(1)
	fill(t, src, 0, 4)
	raw, _ := snapshotBytes(t, src)

	dst := db.Shard(2)
	fill(t, dst, 50, 3)
	before := dump(t, dst)

	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), raw...)) }
	cases := map[string][]byte{
		"empty":        {},
		"bad magic":    mutate(func(b []byte) []byte { b[0] = 'X'; return b }),
		"bad version":  mutate(func(b []byte) []byte { b[len(snapshotMagic)] = 9; return b }),
		"trailing":     mutate(func(b []byte) []byte { return append(b, 0) }),
		"bad checksum": mutate(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }),
		"bad count": mutate(func(b []byte) []byte {
			b[len(b)-5]++
			return b
		}),
		"unknown keyspace": mutate(func(b []byte) []byte {
			// First frame: header(9) | klen | vlen | key...; key[0] is the tag.
			b[len(snapshotMagic)+3] = tagRestoring
			return b
		}),
	}
	// Every truncation.
	for n := 0; n < len(raw); n++ {
		cases[fmt.Sprintf("truncated to %d", n)] = raw[:n]
	}
	// Every single-bit flip in a sample of positions.
	for i := 0; i < len(raw); i += max(1, len(raw)/64) {
		cases[fmt.Sprintf("bit flip at %d", i)] = mutate(func(b []byte) []byte { b[i] ^= 0x10; return b })
	}
	for name, data := range cases {
		err := dst.Restore(bytes.NewReader(data))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("%s: Restore = %v, want ErrBadSnapshot", name, err)
			continue
		}
		equalDumps(t, dump(t, dst), before)
	}
	// A reader failing midway is an error too, and leaves the state intact.
	err := dst.Restore(io.MultiReader(bytes.NewReader(raw[:20]), errReader{}))
	if err == nil {
		t.Error("Restore from a failing reader succeeded")
	}
	equalDumps(t, dump(t, dst), before)

	// No staging file is left behind.
	left, _ := filepath.Glob(filepath.Join(dir, restoreFilePattern))
	if len(left) != 0 {
		t.Errorf("staging files left: %v", left)
	}
	// And the good stream still restores.
	if err := dst.Restore(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestInterruptedRestoreIsFlagged(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	src := db.Shard(1)
	fill(t, src, 0, 5)
	raw, _ := snapshotBytes(t, src)

	// A restore that died after marking the shard: the state is partial.
	dst := db.Shard(2)
	fill(t, dst, 10, 2)
	err := db.kv.db.Update(func(txn *badger.Txn) error { return txn.Set(tagPrefix(2, tagRestoring), nil) })
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Leave a staging file behind as a crash would; Open removes it.
	stale := filepath.Join(dir, "rhizon-restore-123.tmp")
	if err := os.WriteFile(stale, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale staging file survived Open: %v", err)
	}
	dst = db.Shard(2)
	if _, err := dst.Meta(); !errors.Is(err, ErrRestoreIncomplete) {
		t.Fatalf("Meta = %v, want ErrRestoreIncomplete", err)
	}
	if _, err := dst.Snapshot(); !errors.Is(err, ErrRestoreIncomplete) {
		t.Fatalf("Snapshot = %v, want ErrRestoreIncomplete", err)
	}
	// A bad stream leaves the flag; a good one clears it.
	if err := dst.Restore(bytes.NewReader(raw[:10])); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("Restore = %v", err)
	}
	if _, err := dst.Meta(); !errors.Is(err, ErrRestoreIncomplete) {
		t.Fatalf("Meta = %v, want ErrRestoreIncomplete", err)
	}
	if err := dst.Restore(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	if m, err := dst.Meta(); err != nil || m.Index != 5 {
		t.Fatalf("Meta after restore = %+v, %v", m, err)
	}
	equalDumps(t, dump(t, dst), dump(t, db.Shard(1)))
}

func TestRestoreLargeSnapshot(t *testing.T) {
	db := openDB(t, t.TempDir())
	src := db.Shard(1)
	limit, _ := db.BatchLimits()
	b, _ := bigBatch(src, 1, limit)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	raw, want := snapshotBytes(t, src)
	if err := db.Shard(2).Restore(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	equalDumps(t, dump(t, db.Shard(2)), want)
}

func snapshotReader(t testing.TB, s *ShardStore) io.Reader {
	t.Helper()
	raw, _ := snapshotBytes(t, s)
	return bytes.NewReader(raw)
}

func TestSnapshotLongKeys(t *testing.T) {
	db := openDB(t, t.TempDir())
	// Address parts up to the 128-byte id limit and a 256-byte idempotency
	// key make keys of several hundred bytes.
	long := func(c byte) string { return string(bytes.Repeat([]byte{c}, 128)) }
	a := addr(long('t'), long('e'))
	a.Workspace, a.ActorType = long('w'), long('a')
	commit(t, db.Shard(1), func(b engine.Batch) {
		b.PutResult(a, string(bytes.Repeat([]byte("k"), 256)), []byte("r"))
		b.PutTimer(engine.Timer{Address: a, Name: long('n'), At: 1})
	})
	raw, want := snapshotBytes(t, db.Shard(1))
	if err := db.Shard(2).Restore(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	equalDumps(t, dump(t, db.Shard(2)), want)
}

// FuzzRestore feeds arbitrary streams to Restore: it must never panic, and
// whatever it rejects must leave the shard as it was.
func FuzzRestore(f *testing.F) {
	db := openDB(f, f.TempDir())
	fill(f, db.Shard(1), 0, 3)
	raw, _ := snapshotBytes(f, db.Shard(1))
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add([]byte(snapshotMagic + "\x01\xff\xff\x03"))
	dst := db.Shard(2)
	fill(f, dst, 10, 2)
	before := dump(f, dst)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := dst.Restore(bytes.NewReader(data)); err != nil {
			equalDumps(t, dump(t, dst), before)
			return
		}
		// Accepted (a valid stream): put the original state back.
		if err := dst.Clear(); err != nil {
			t.Fatal(err)
		}
		fill(t, dst, 10, 2)
		before = dump(t, dst)
	})
}
