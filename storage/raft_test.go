package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/internal/testkit"
)

func mkLog(i uint64, term uint64) *raft.Log {
	return &raft.Log{
		Index: i, Term: term, Type: raft.LogCommand,
		Data:       []byte(fmt.Sprintf("data-%d", i)),
		AppendedAt: time.Unix(1_700_000_000, int64(i)).UTC(),
	}
}

func storeRange(t testing.TB, s *LogStore, from, to, term uint64) {
	t.Helper()
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, mkLog(i, term))
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
}

func checkBounds(t testing.TB, s *LogStore, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil || f != first {
		t.Fatalf("FirstIndex = %d, %v; want %d", f, err, first)
	}
	l, err := s.LastIndex()
	if err != nil || l != last {
		t.Fatalf("LastIndex = %d, %v; want %d", l, err, last)
	}
}

func TestLogStoreSemantics(t *testing.T) {
	db := openRaftDB(t, t.TempDir())
	s := db.Shard(4)
	checkBounds(t, s, 0, 0)
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on empty = %v", err)
	}

	storeRange(t, s, 1, 10, 1)
	checkBounds(t, s, 1, 10)
	if err := s.GetLog(5, &l); err != nil || !reflect.DeepEqual(&l, mkLog(5, 1)) {
		t.Fatalf("GetLog(5) = %+v, %v", l, err)
	}
	if err := s.GetLog(11, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(11) = %v", err)
	}

	// Every field round-trips, including empty ones and the zero time.
	odd := []*raft.Log{
		{Index: 11, Term: 2, Type: raft.LogNoop},
		{Index: 12, Term: 2, Type: raft.LogConfiguration, Data: []byte{0}, Extensions: []byte("ext"), AppendedAt: time.Unix(0, 1).UTC()},
		{Index: 13, Term: 1 << 62, Type: raft.LogBarrier, Data: bytes.Repeat([]byte("z"), 1<<20+10)},
	}
	for _, want := range odd {
		if err := s.StoreLog(want); err != nil {
			t.Fatal(err)
		}
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil || !reflect.DeepEqual(&got, want) {
			t.Fatalf("round trip of %d: got %+v, %v", want.Index, got, err)
		}
	}
	checkBounds(t, s, 1, 13)

	// Compaction deletes a prefix, conflict resolution a suffix; both inclusive.
	if err := s.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 4, 13)
	if err := s.GetLog(3, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(3) after delete = %v", err)
	}
	if err := s.DeleteRange(9, 100); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 4, 8)
	// Overwriting an index (a new leader's entry) replaces it.
	storeRange(t, s, 8, 9, 7)
	if err := s.GetLog(8, &l); err != nil || l.Term != 7 {
		t.Fatalf("GetLog(8) after overwrite = %+v, %v", l, err)
	}
	// Deleting everything (what Raft does for a MonotonicLogStore after a
	// snapshot restore) empties the store; a later entry may start anywhere.
	if err := s.DeleteRange(0, 1<<63); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 0, 0)
	storeRange(t, s, 500, 502, 9)
	checkBounds(t, s, 500, 502)
	if !s.IsMonotonic() {
		t.Fatal("IsMonotonic = false")
	}
	if err := s.DeleteRange(5, 4); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 500, 502)
}

func TestLogStoreShardIsolation(t *testing.T) {
	db := openRaftDB(t, t.TempDir())
	a, b, c := db.Shard(1), db.Shard(2), db.Shard(3)
	storeRange(t, a, 1, 5, 1)
	storeRange(t, c, 100, 105, 1)
	checkBounds(t, b, 0, 0)
	checkBounds(t, a, 1, 5)
	checkBounds(t, c, 100, 105)
	if err := a.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetUint64([]byte("CurrentTerm")); err == nil {
		t.Fatal("shard 2 sees shard 1's term")
	}
	if err := b.DeleteRange(0, 1<<63); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, a, 1, 5)
	checkBounds(t, c, 100, 105)
}

func TestStableStoreMissingKeys(t *testing.T) {
	db := openRaftDB(t, t.TempDir())
	s := db.Shard(1)
	// hashicorp/raft compares err.Error() with "not found" (api.go NewRaft and
	// HasExistingState, raft.go requestVote); any other error is fatal there.
	if v, err := s.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" || v != nil {
		t.Fatalf("Get(missing) = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" || v != 0 {
		t.Fatalf("GetUint64(missing) = %d, %v", v, err)
	}
	if !errors.Is(func() error { _, err := s.Get([]byte("x")); return err }(), ErrKeyNotFound) {
		t.Fatal("Get(missing) is not ErrKeyNotFound")
	}
	has, err := raft.HasExistingState(s, s, raft.NewInmemSnapshotStore())
	if err != nil || has {
		t.Fatalf("HasExistingState on empty = %v, %v", has, err)
	}

	if err := s.Set([]byte("LastVoteCand"), []byte("node-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 1<<40+5); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 1<<40+5 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
	if err := s.Set([]byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get([]byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("Get(empty value) = %#v, %v", v, err)
	}
	if _, err := s.GetUint64([]byte("LastVoteCand")); err == nil {
		t.Fatal("GetUint64 of a non-uint64 value succeeded")
	}
	has, err = raft.HasExistingState(s, s, raft.NewInmemSnapshotStore())
	if err != nil || !has {
		t.Fatalf("HasExistingState with a term = %v, %v", has, err)
	}
}

func TestLogStoreDetectsCorruption(t *testing.T) {
	db := openRaftDB(t, t.TempDir())
	s := db.Shard(1)
	storeRange(t, s, 1, 3, 1)
	at := func(i uint64) loc {
		l, ok := db.shards[1].get(i)
		if !ok {
			t.Fatalf("entry %d not indexed", i)
		}
		return l
	}
	l2 := at(2)
	f, err := os.OpenFile(l2.seg.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw := make([]byte, l2.n)
	if _, err := f.ReadAt(raw, l2.off); err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		bad := append([]byte(nil), raw...)
		bad[i] ^= 0x04
		if _, err := f.WriteAt(bad, l2.off); err != nil {
			t.Fatal(err)
		}
		var l raft.Log
		if err := s.GetLog(2, &l); err == nil {
			t.Fatalf("flip at byte %d not detected", i)
		}
	}
	// An entry stored under the wrong index is caught too ("data-3" is as
	// long as "data-2").
	if _, err := f.WriteAt(encodeLog(mkLog(3, 1)), l2.off); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.GetLog(2, &l); err == nil {
		t.Fatal("misplaced entry not detected")
	}
}

func TestStoreLogsLargerThanASegment(t *testing.T) {
	dir := t.TempDir()
	db := openRaftDBSeg(t, dir, 1<<20)
	s := db.Shard(1)
	data := bytes.Repeat([]byte("d"), 500<<10)
	var logs []*raft.Log
	for i := uint64(1); len(logs)*len(data) < 3<<20; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1, Data: data})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	storeRange(t, db.Shard(2), 1, 3, 1)
	checkBounds(t, s, 1, uint64(len(logs)))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openRaftDBSeg(t, dir, 1<<20)
	s = db.Shard(1)
	checkBounds(t, s, 1, uint64(len(logs)))
	checkBounds(t, db.Shard(2), 1, 3)
	var l raft.Log
	if err := s.GetLog(uint64(len(logs)), &l); err != nil || !bytes.Equal(l.Data, data) {
		t.Fatalf("GetLog(last) = %d bytes, %v", len(l.Data), err)
	}
	if err := s.DeleteRange(1, uint64(len(logs))); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, s, 0, 0)
}

func TestRaftDBReopen(t *testing.T) {
	dir := t.TempDir()
	db := openRaftDB(t, dir)
	s := db.Shard(1)
	storeRange(t, s, 1, 50, 2)
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openRaftDB(t, dir)
	s = db.Shard(1)
	checkBounds(t, s, 11, 50)
	var l raft.Log
	if err := s.GetLog(50, &l); err != nil || !reflect.DeepEqual(&l, mkLog(50, 2)) {
		t.Fatalf("GetLog(50) after reopen = %+v, %v", l, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 2 {
		t.Fatalf("term after reopen = %d, %v", v, err)
	}
}

// countFSM is a trivial FSM: it counts applied commands and checks that they
// arrive in order.
type countFSM struct {
	mu sync.Mutex
	n  uint64
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if want := fmt.Sprintf("cmd-%d", f.n); string(l.Data) != want {
		return fmt.Errorf("applied %q, want %q", l.Data, want)
	}
	return f.n
}

func (f *countFSM) count() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) {
	return countSnapshot(f.count()), nil
}

func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.mu.Lock()
	f.n = binary.BigEndian.Uint64(b[:])
	f.mu.Unlock()
	return nil
}

type countSnapshot uint64

func (c countSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(binary.BigEndian.AppendUint64(nil, uint64(c))); err != nil {
		return errors.Join(err, sink.Cancel())
	}
	return sink.Close()
}

func (countSnapshot) Release() {}

// TestRealRaftOnLogStore runs a single-node hashicorp/raft cluster on the
// stores, applies 200 entries with a snapshot and log compaction midway,
// restarts it from the same directories and checks that term, log and state
// survive; then does a user snapshot restore, which makes Raft delete the
// whole log because the store is monotonic.
func TestRealRaftOnLogStore(t *testing.T) {
	raftDir, snapDir := t.TempDir(), t.TempDir()
	conf := func() *raft.Config {
		c := raft.DefaultConfig()
		c.LocalID = "n1"
		c.HeartbeatTimeout = 50 * time.Millisecond
		c.ElectionTimeout = 50 * time.Millisecond
		c.LeaderLeaseTimeout = 50 * time.Millisecond
		c.CommitTimeout = 5 * time.Millisecond
		c.SnapshotThreshold = 1 << 20 // only explicit snapshots
		c.TrailingLogs = 20
		c.LogOutput = io.Discard
		return c
	}
	start := func(db *RaftDB, fsm raft.FSM) (*raft.Raft, *raft.InmemTransport) {
		t.Helper()
		addr, trans := raft.NewInmemTransport("n1")
		snaps, err := raft.NewFileSnapshotStore(snapDir, 2, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ls := db.Shard(7)
		has, err := raft.HasExistingState(ls, ls, snaps)
		if err != nil {
			t.Fatal(err)
		}
		if !has {
			cfg := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}
			if err := raft.BootstrapCluster(conf(), ls, ls, snaps, trans, cfg); err != nil {
				t.Fatal(err)
			}
		}
		r, err := raft.NewRaft(conf(), fsm, ls, ls, snaps, trans)
		if err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyNil(t, 10*time.Second, "single node leads", func() error {
			if r.State() != raft.Leader {
				return fmt.Errorf("state %v", r.State())
			}
			return nil
		})
		return r, trans
	}
	apply := func(r *raft.Raft, from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			f := r.Apply([]byte(fmt.Sprintf("cmd-%d", i)), 5*time.Second)
			if err := f.Error(); err != nil {
				t.Fatalf("Apply %d: %v", i, err)
			}
			if err, ok := f.Response().(error); ok {
				t.Fatalf("Apply %d: %v", i, err)
			}
		}
	}

	db := openRaftDB(t, raftDir)
	fsm := &countFSM{}
	r, trans := start(db, fsm)
	apply(r, 1, 100)
	if err := r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	apply(r, 101, 200)
	if fsm.count() != 200 {
		t.Fatalf("FSM applied %d", fsm.count())
	}
	term, last := r.CurrentTerm(), r.LastIndex()
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	_ = trans.Close()
	ls := db.Shard(7)
	first, _ := ls.FirstIndex()
	if first <= 1 {
		t.Fatalf("FirstIndex = %d: the snapshot did not compact the log", first)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart from the same directories.
	db = openRaftDB(t, raftDir)
	ls = db.Shard(7)
	if got, err := ls.GetUint64([]byte("CurrentTerm")); err != nil || got != term {
		t.Fatalf("stored term = %d, %v; want %d", got, err, term)
	}
	checkBounds(t, ls, first, last)
	var l raft.Log
	if err := ls.GetLog(last, &l); err != nil || l.Term != term {
		t.Fatalf("last log = %+v, %v", l, err)
	}
	fsm = &countFSM{}
	r, trans = start(db, fsm)
	defer func() {
		_ = r.Shutdown().Error()
		_ = trans.Close()
	}()
	if r.CurrentTerm() <= term {
		t.Fatalf("term after restart = %d, want > %d", r.CurrentTerm(), term)
	}
	// Snapshot restore plus replay of the log after it gives all 200.
	testkit.EventuallyNil(t, 10*time.Second, "FSM restored to 200", func() error {
		if n := fsm.count(); n != 200 {
			return fmt.Errorf("FSM has %d of 200 after restart", n)
		}
		return nil
	})
	apply(r, 201, 210)

	// A user restore makes Raft remove every log entry (monotonic store).
	var buf bytes.Buffer
	buf.Write(binary.BigEndian.AppendUint64(nil, 500))
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(buf.Len())}
	if err := r.Restore(meta, &buf, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if fsm.count() != 500 {
		t.Fatalf("FSM after user restore = %d", fsm.count())
	}
	testkit.EventuallyNil(t, 5*time.Second, "log compacted after the restore", func() error {
		f, err := ls.FirstIndex()
		if err != nil {
			return err
		}
		l, _ := ls.LastIndex()
		// Only entries appended after the restore (the no-op) may remain.
		if f == 0 || f != l {
			return fmt.Errorf("log holds %d-%d after restore", f, l)
		}
		if f <= last {
			return fmt.Errorf("old entry %d survived the restore", f)
		}
		return nil
	})
	if err := r.Apply([]byte("cmd-501"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if fsm.count() != 501 {
		t.Fatalf("FSM after restore and apply = %d", fsm.count())
	}
}
