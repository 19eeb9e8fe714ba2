package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/internal/testkit"
)

func openRaftDBSeg(t testing.TB, dir string, segSize int64) *RaftDB {
	t.Helper()
	db, err := openRaft(dir, testOptions(), segSize)
	if err != nil {
		t.Fatalf("openRaft: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func closeDB(t testing.TB, db *RaftDB) {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// recordEnds returns the end offset of every record of a segment file.
func recordEnds(t testing.TB, path string) []int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ends []int64
	if _, _, err := scanRecords(data, func(off int64, _ byte, p []byte) error {
		ends = append(ends, off+int64(len(p)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ends
}

func checkEntries(t testing.TB, s *LogStore, from, to, term uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil || !reflect.DeepEqual(&l, mkLog(i, term)) {
			t.Fatalf("GetLog(%d) = %+v, %v", i, l, err)
		}
	}
}

// A crash in the middle of a group commit leaves part of a record: reopening
// keeps every complete record before it and nothing after.
func TestWALTornTail(t *testing.T) {
	for _, cut := range []string{"mid-record", "mid-header", "bit-flip"} {
		t.Run(cut, func(t *testing.T) {
			dir := t.TempDir()
			db := openRaftDBSeg(t, dir, 1<<20)
			s := db.Shard(1)
			for i := uint64(1); i <= 10; i++ {
				storeRange(t, s, i, i, 1)
			}
			closeDB(t, db)
			seg := segmentFiles(t, dir)[0]
			ends := recordEnds(t, seg)
			if len(ends) != 10 {
				t.Fatalf("%d records", len(ends))
			}
			start, end := ends[8], ends[9] // entry 10's record
			f, err := os.OpenFile(seg, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			switch cut {
			case "mid-record":
				err = f.Truncate((start + end) / 2)
			case "mid-header":
				err = f.Truncate(start + 3)
			case "bit-flip":
				_, err = f.WriteAt([]byte{0xff}, end-2)
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = f.Close()

			db = openRaftDBSeg(t, dir, 1<<20)
			s = db.Shard(1)
			checkBounds(t, s, 1, 9)
			checkEntries(t, s, 1, 9, 1)
			// Writing continues after the last good record.
			storeRange(t, s, 10, 12, 2)
			closeDB(t, db)
			db = openRaftDBSeg(t, dir, 1<<20)
			s = db.Shard(1)
			checkBounds(t, s, 1, 12)
			checkEntries(t, s, 10, 12, 2)
		})
	}
}

// A torn write may leave later records of the same write intact behind a
// broken one. They were never acknowledged and must not come back when a
// new record ends exactly where they begin.
func TestWALStaleTailNotReplayed(t *testing.T) {
	dir := t.TempDir()
	db := openRaftDBSeg(t, dir, 1<<20)
	s := db.Shard(1)
	for i := uint64(1); i <= 5; i++ {
		storeRange(t, s, i, i, 1)
	}
	closeDB(t, db)
	seg := segmentFiles(t, dir)[0]
	ends := recordEnds(t, seg)
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, ends[1]+5); err != nil { // record 3's checksum
		t.Fatal(err)
	}
	_ = f.Close()

	db = openRaftDBSeg(t, dir, 1<<20)
	s = db.Shard(1)
	checkBounds(t, s, 1, 2)
	storeRange(t, s, 3, 3, 2) // as long as the old record 3: ends where record 4 was
	closeDB(t, db)
	if got := recordEnds(t, seg); len(got) != 3 || got[2] != ends[2] {
		t.Fatalf("record ends %v, want the first 3 of %v", got, ends)
	}
	db = openRaftDBSeg(t, dir, 1<<20)
	s = db.Shard(1)
	checkBounds(t, s, 1, 3)
	checkEntries(t, s, 3, 3, 2)
}

func TestWALReopenAfterDeleteRange(t *testing.T) {
	dir := t.TempDir()
	db := openRaftDBSeg(t, dir, 1<<20)
	s := db.Shard(1)
	storeRange(t, s, 1, 100, 1)
	if err := s.DeleteRange(1, 30); err != nil { // compaction
		t.Fatal(err)
	}
	if err := s.DeleteRange(91, 100); err != nil { // a conflicting tail
		t.Fatal(err)
	}
	storeRange(t, s, 91, 95, 2)
	if err := s.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	closeDB(t, db)

	db = openRaftDBSeg(t, dir, 1<<20)
	s = db.Shard(1)
	checkBounds(t, s, 31, 95)
	checkEntries(t, s, 31, 90, 1)
	checkEntries(t, s, 91, 95, 2)
	var l raft.Log
	for _, i := range []uint64{30, 96, 100} {
		if err := s.GetLog(i, &l); err != raft.ErrLogNotFound {
			t.Fatalf("GetLog(%d) after reopen = %v", i, err)
		}
	}
	// Everything deleted (a snapshot restore), then a fresh start elsewhere.
	if err := s.DeleteRange(0, 1<<63); err != nil {
		t.Fatal(err)
	}
	storeRange(t, s, 1000, 1001, 3)
	closeDB(t, db)
	db = openRaftDBSeg(t, dir, 1<<20)
	s = db.Shard(1)
	checkBounds(t, s, 1000, 1001)
	checkEntries(t, s, 1000, 1001, 3)
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 2 {
		t.Fatalf("CurrentTerm = %d, %v", v, err)
	}
}

// model is what one shard's store should hold.
type model struct {
	first, last uint64
	term        map[uint64]uint64
	stable      map[string]uint64
}

// TestWALManyShardsInterleaved has many shards append, compact, truncate
// and set stable values at once, with small segments so the log rotates and
// reclaims space all the time, and checks every shard against a model before
// and after reopening.
func TestWALManyShardsInterleaved(t *testing.T) {
	const segSize = 64 << 10
	dir := t.TempDir()
	db := openRaftDBSeg(t, dir, segSize)
	const shards = 12
	models := make([]*model, shards)
	var wg sync.WaitGroup
	for sh := range shards {
		m := &model{term: map[uint64]uint64{}, stable: map[string]uint64{}}
		models[sh] = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(sh), 7))
			s := db.Shard(uint32(sh))
			term := uint64(1)
			ops := 300
			if sh == 0 {
				ops = 2 // an idle shard pins the oldest segment
			}
			for range ops {
				switch r := rng.IntN(20); {
				case r == 0 && m.last > m.first+5: // a conflicting tail
					cut := m.last - uint64(rng.IntN(5))
					if err := s.DeleteRange(cut, m.last); err != nil {
						t.Error(err)
						return
					}
					for i := cut; i <= m.last; i++ {
						delete(m.term, i)
					}
					m.last = cut - 1
					term++
				case r < 3 && m.last > m.first+20: // compaction
					upto := m.first + uint64(rng.IntN(int(m.last-m.first-10)))
					if err := s.DeleteRange(0, upto); err != nil {
						t.Error(err)
						return
					}
					for i := m.first; i <= upto; i++ {
						delete(m.term, i)
					}
					m.first = upto + 1
				case r == 3:
					term++
					if err := s.SetUint64([]byte("CurrentTerm"), term); err != nil {
						t.Error(err)
						return
					}
					m.stable["CurrentTerm"] = term
				default:
					n := 1 + rng.IntN(16)
					if m.first == 0 {
						m.first = 1
					}
					var logs []*raft.Log
					for range n {
						m.last++
						logs = append(logs, mkLog(m.last, term))
						m.term[m.last] = term
					}
					if err := s.StoreLogs(logs); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	verify := func(db *RaftDB) {
		t.Helper()
		for sh, m := range models {
			s := db.Shard(uint32(sh))
			if len(m.term) == 0 {
				checkBounds(t, s, 0, 0)
			} else {
				checkBounds(t, s, m.first, m.last)
			}
			for i, term := range m.term {
				var l raft.Log
				if err := s.GetLog(i, &l); err != nil || !reflect.DeepEqual(&l, mkLog(i, term)) {
					t.Fatalf("shard %d GetLog(%d) = %+v, %v; want term %d", sh, i, l, err, term)
				}
			}
			for k, v := range m.stable {
				if got, err := s.GetUint64([]byte(k)); err != nil || got != v {
					t.Fatalf("shard %d %s = %d, %v; want %d", sh, k, got, err, v)
				}
			}
		}
	}
	verify(db)
	var live int64
	for _, s := range db.segs {
		live += s.live
	}
	// Reclaiming keeps the files near twice the live data.
	if n, bound := len(segmentFiles(t, dir)), int(2*live/segSize)+4; n > bound {
		t.Errorf("%d segment files for %d live bytes; want at most %d", n, live, bound)
	}
	closeDB(t, db)
	db = openRaftDBSeg(t, dir, segSize)
	verify(db)
}

// An idle shard's entry and a stable value in the oldest segment must not
// keep every later segment alive: they are copied forward and the old
// segments go, whether the busy shard keeps a short log or one of several
// segments.
func TestWALReclaimsPinnedSegments(t *testing.T) {
	const segSize = 32 << 10
	for _, keep := range []uint64{50, 1500} {
		t.Run(fmt.Sprint("keep=", keep), func(t *testing.T) {
			dir := t.TempDir()
			db := openRaftDBSeg(t, dir, segSize)
			idle, busy := db.Shard(1), db.Shard(2)
			storeRange(t, idle, 1, 1, 1)
			if err := idle.SetUint64([]byte("CurrentTerm"), 1); err != nil {
				t.Fatal(err)
			}
			const n = 4000
			most := 0
			for i := uint64(1); i <= n; i++ {
				storeRange(t, busy, i, i, 1)
				if i > keep {
					if err := busy.DeleteRange(i-keep, i-keep); err != nil {
						t.Fatal(err)
					}
				}
				if i%50 == 0 {
					most = max(most, len(segmentFiles(t, dir)))
				}
			}
			// The live window's entries lie among the deletes of older ones
			// (about 90 bytes of records per entry): its segments, plus the
			// one being written and one partly dead waiting for its turn.
			if bound := int(keep*90/segSize) + 2; most > bound {
				t.Fatalf("up to %d segment files with %d live entries; want at most %d", most, keep, bound)
			}
			closeDB(t, db)
			db = openRaftDBSeg(t, dir, segSize)
			idle, busy = db.Shard(1), db.Shard(2)
			checkBounds(t, idle, 1, 1)
			checkEntries(t, idle, 1, 1, 1)
			checkBounds(t, busy, n-keep+1, n)
			checkEntries(t, busy, n-keep+1, n, 1)
			if v, err := idle.GetUint64([]byte("CurrentTerm")); err != nil || v != 1 {
				t.Fatalf("CurrentTerm = %d, %v", v, err)
			}
		})
	}
}

// Segments after the first come from spares zero-filled in the background
// when one is ready, and the log reads back the same across them.
func TestWALSpareSegments(t *testing.T) {
	const segSize = 64 << 10
	dir := t.TempDir()
	db := openRaftDBSeg(t, dir, segSize)
	s := db.Shard(1)
	// Write until the background maker has a spare ready (it is asked for
	// once a segment is half full), then on across segment ends, where it
	// is adopted.
	next := uint64(1)
	testkit.Eventually(t, 10*time.Second, "a spare made", func() (bool, string) {
		for range 10 {
			storeRange(t, s, next, next, 1)
			next++
		}
		return db.spareReady.Load(), fmt.Sprintf("%d entries written", next-1)
	})
	for ; next <= 1500; next++ {
		storeRange(t, s, next, next, 1)
	}
	closeDB(t, db)
	if db.sparesUsed == 0 {
		t.Fatal("no segment came from a spare")
	}
	// Spares (finished or not) left by a process are not segments.
	for _, name := range []string{spareName, sparePartName} {
		if err := os.WriteFile(filepath.Join(dir, "wal", name), []byte("RHZNWAL1 junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db = openRaftDBSeg(t, dir, segSize)
	for _, name := range []string{spareName, sparePartName} {
		if _, err := os.Stat(filepath.Join(dir, "wal", name)); err == nil {
			t.Fatalf("%s kept across a reopen", name)
		}
	}
	checkBounds(t, db.Shard(1), 1, 1500)
	checkEntries(t, db.Shard(1), 1, 1500, 1)
}

// Damage anywhere but the tail of the last segment is not a torn write: the
// log refuses to open rather than silently drop acknowledged entries.
func TestWALCorruptOlderSegmentRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	db := openRaftDBSeg(t, dir, 4<<10)
	s := db.Shard(1)
	for i := uint64(1); i <= 200; i++ {
		storeRange(t, s, i, i, 1)
	}
	closeDB(t, db)
	segs := segmentFiles(t, dir)
	if len(segs) < 2 {
		t.Fatalf("%d segments", len(segs))
	}
	ends := recordEnds(t, segs[0])
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xee}, ends[0]+3); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if db, err := openRaft(dir, testOptions(), 4<<10); err == nil {
		_ = db.Close()
		t.Fatal("opened a log with a damaged older segment")
	}
}

// A crash right after a new segment was created leaves it without a valid
// header; nothing in it was acknowledged, so it is dropped.
func TestWALTornSegmentHeader(t *testing.T) {
	dir := t.TempDir()
	db := openRaftDBSeg(t, dir, 1<<20)
	storeRange(t, db.Shard(1), 1, 5, 1)
	closeDB(t, db)
	junk := filepath.Join(dir, "wal", segmentName(2))
	if err := os.WriteFile(junk, []byte("RHZN"), 0o644); err != nil {
		t.Fatal(err)
	}
	db = openRaftDBSeg(t, dir, 1<<20)
	checkBounds(t, db.Shard(1), 1, 5)
	storeRange(t, db.Shard(1), 6, 6, 1)
	closeDB(t, db)
	db = openRaftDBSeg(t, dir, 1<<20)
	checkBounds(t, db.Shard(1), 1, 6)
}

func TestWALSingleOpener(t *testing.T) {
	dir := t.TempDir()
	openRaftDB(t, dir)
	if db, err := OpenRaft(dir, testOptions()); err == nil {
		_ = db.Close()
		t.Fatal("a second OpenRaft of the same directory succeeded")
	}
}

// A Raft store written by the Badger-based version is copied into the log
// on open, and the Badger files go.
func TestWALMigratesBadgerStore(t *testing.T) {
	dir := t.TempDir()
	k, err := openKV(dir, testOptions(), true, magicRaft, "raft")
	if err != nil {
		t.Fatal(err)
	}
	var ops []op
	for sh := uint32(1); sh <= 3; sh++ {
		for i := uint64(10); i <= 20+uint64(sh); i++ {
			ops = append(ops, op{key: binary.BigEndian.AppendUint64(keyBuf(sh, tagRaftLog, 8), i), val: encodeLog(mkLog(i, uint64(sh)))})
		}
		ops = append(ops, op{key: append(keyBuf(sh, tagRaftStable, 11), "CurrentTerm"...), val: binary.BigEndian.AppendUint64(nil, uint64(sh))})
	}
	if err := k.writeChunked(ops); err != nil {
		t.Fatal(err)
	}
	if err := k.close(); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		db := openRaftDB(t, dir)
		for sh := uint32(1); sh <= 3; sh++ {
			s := db.Shard(sh)
			checkBounds(t, s, 10, 20+uint64(sh))
			checkEntries(t, s, 10, 20+uint64(sh), uint64(sh))
			if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != uint64(sh) {
				t.Fatalf("shard %d CurrentTerm = %d, %v", sh, v, err)
			}
		}
		closeDB(t, db)
		if hasBadger(dir) {
			t.Fatal("Badger files left after the migration")
		}
	}
}

// crashChildEnv makes TestWALCrashChild the child of TestWALCrashKill9.
const crashChildEnv = "RHIZON_WAL_CRASH_DIR"

// TestWALCrashKill9 kills a process that appends to four shards' logs with
// SIGKILL and checks that every entry it had seen acknowledged is there
// after reopening, and that each log is contiguous.
func TestWALCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWALCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[uint32]uint64{}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill at a different moment each round, counted from the first
		// acknowledgement (a race-enabled child starts slowly).
		var deadline <-chan time.Time
		started := time.After(time.Minute)
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read
				}
				var sh uint32
				var idx uint64
				if _, err := fmt.Sscanf(line, "acked %d %d", &sh, &idx); err == nil {
					acked[sh] = max(acked[sh], idx)
					if deadline == nil {
						deadline = time.After(time.Duration(100+200*round) * time.Millisecond)
					}
				}
			case <-deadline:
				break read
			case <-started:
				break read
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		go func() {
			for range lines {
			}
		}()
		_ = cmd.Wait()
		if len(acked) == 0 {
			t.Fatalf("round %d: child acknowledged nothing", round)
		}
		db := openRaftDB(t, dir)
		for sh, idx := range acked {
			s := db.Shard(sh)
			first, _ := s.FirstIndex()
			last, _ := s.LastIndex()
			if last < idx {
				t.Fatalf("round %d shard %d: last index %d, but %d was acknowledged", round, sh, last, idx)
			}
			for i := first; i <= last; i++ {
				var l raft.Log
				if err := s.GetLog(i, &l); err != nil || !bytes.Equal(l.Data, crashData(sh, i)) {
					t.Fatalf("round %d shard %d GetLog(%d) = %v", round, sh, i, err)
				}
			}
			if v, err := s.GetUint64([]byte("LastAcked")); err == nil && v > last {
				t.Fatalf("round %d shard %d: stable LastAcked %d beyond the log (%d)", round, sh, v, last)
			}
		}
		closeDB(t, db)
	}
}

func crashData(shard uint32, i uint64) []byte {
	return []byte(strings.Repeat(fmt.Sprintf("s%d-i%d;", shard, i), 1+int(i%37)))
}

func TestWALCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("run by TestWALCrashKill9")
	}
	db, err := openRaft(dir, testOptions(), 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for sh := uint32(1); sh <= 4; sh++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := db.Shard(sh)
			next, _ := s.LastIndex()
			for {
				n := 1 + int(next%7)
				logs := make([]*raft.Log, n)
				for j := range logs {
					next++
					logs[j] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: crashData(sh, next)}
				}
				if err := s.StoreLogs(logs); err != nil {
					t.Error(err)
					return
				}
				if next%10 < 3 {
					if err := s.SetUint64([]byte("LastAcked"), next); err != nil {
						t.Error(err)
						return
					}
				}
				if first, _ := s.FirstIndex(); next > first+500 {
					if err := s.DeleteRange(first, next-400); err != nil {
						t.Error(err)
						return
					}
				}
				mu.Lock()
				fmt.Fprintln(w, "acked", sh, next)
				_ = w.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// BenchmarkRaftDBGroupCommit measures the node's Raft log under what a
// loaded node does: 8 shards, each storing one 1 KiB entry at a time (a
// leader's batch or a follower's append), all sharing the group commit.
//
//	go test -run '^$' -bench RaftDBGroupCommit -benchtime 20000x ./storage/
func BenchmarkRaftDBGroupCommit(b *testing.B) {
	db := openRaftDB(b, b.TempDir())
	data := bytes.Repeat([]byte("x"), 1024)
	var next [8]uint64
	var wg sync.WaitGroup
	var n atomic.Int64
	b.ResetTimer()
	for sh := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := db.Shard(uint32(sh))
			for n.Add(1) <= int64(b.N) {
				next[sh]++
				if err := s.StoreLogs([]*raft.Log{{Index: next[sh], Term: 1, Data: data}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
