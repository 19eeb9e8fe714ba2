package storage

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rhizon/rhizon/engine"
)

// TestDueTimersSkipFiredTombstones checks that after timers fire, the next
// DueTimers starts at the first live timer rather than rescanning the deleted
// ones (which made each call take ~30 ms after 100k fired timers).
func TestDueTimersSkipFiredTombstones(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	const n = 5000
	commit(t, s, func(b engine.Batch) {
		for i := range n {
			b.PutTimer(engine.Timer{Address: addr("t", fmt.Sprint(i)), Name: "x", At: int64(i)})
		}
	})
	for fired := 0; fired < n; {
		due, err := s.DueTimers(math.MaxInt64, 1024)
		if err != nil {
			t.Fatal(err)
		}
		fired += len(due)
		commit(t, s, func(b engine.Batch) {
			for _, tm := range due {
				b.DeleteTimer(tm)
			}
		})
	}
	commit(t, s, func(b engine.Batch) { b.PutTimer(engine.Timer{Address: addr("t", "late"), Name: "x", At: 1 << 40}) })
	if due, err := s.DueTimers(math.MaxInt64, 10); err != nil || len(due) != 1 || due[0].At != 1<<40 {
		t.Fatalf("DueTimers = %+v, %v", due, err)
	}
	if low, _ := s.due.read(); low != 1<<40 {
		t.Fatalf("scan starts at %d, want %d", low, int64(1)<<40)
	}
	// A timer put before the bound is still found.
	commit(t, s, func(b engine.Batch) { b.PutTimer(engine.Timer{Address: addr("t", "early"), Name: "x", At: -5}) })
	if due, _ := s.DueTimers(0, 10); len(due) != 1 || due[0].At != -5 {
		t.Fatalf("DueTimers after an earlier put = %+v", due)
	}
}

// TestDueTimersBoundUnderConcurrentReaders runs random timer writes on one
// goroutine (the engine) while another hammers DueTimers (the proposer), and
// checks after every commit that the writer sees exactly the model's timers:
// a reader with a stale view must never raise the scan bound past a live timer.
func TestDueTimersBoundUnderConcurrentReaders(t *testing.T) {
	db := openDB(t, t.TempDir())
	s := db.Shard(1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reader := db.Shard(1) // another view shares the bound
			for !stop.Load() {
				if _, err := reader.DueTimers(math.MaxInt64, 1+rand.IntN(3)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	model := map[string]engine.Timer{}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 400 {
		b := s.NewBatch()
		for range 1 + rng.IntN(4) {
			name := fmt.Sprint(rng.IntN(20))
			a := addr("t", "e")
			if rng.IntN(3) == 0 {
				b.DeleteTimer(engine.Timer{Address: a, Name: name})
				delete(model, name)
			} else {
				tm := engine.Timer{Address: a, Name: name, At: int64(rng.IntN(200) - 100)}
				b.PutTimer(tm)
				model[name] = tm
			}
		}
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		if step%50 == 0 {
			if err := s.Restore(snapshotReader(t, s)); err != nil { // resets the bound
				t.Fatal(err)
			}
		}
		got, err := s.DueTimers(math.MaxInt64, 100)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]engine.Timer, 0, len(model))
		for _, tm := range model {
			want = append(want, tm)
		}
		sort.Slice(want, func(i, j int) bool {
			if want[i].At != want[j].At {
				return want[i].At < want[j].At
			}
			return want[i].Name < want[j].Name
		})
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("step %d: DueTimers = %v\nwant %v", step, got, want)
		}
	}
	stop.Store(true)
	wg.Wait()
}

// TestDueTimersSkipWhenNothingDue checks the shortcut that returns at once
// when the bound says no timer is due yet: it must still find every timer as
// soon as it is due, including ones put after the bound was raised, and after
// a restart (the bound starts over) or a restore.
func TestDueTimersSkipWhenNothingDue(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s := db.Shard(1)
	due := func(s *ShardStore, upTo int64) []int64 {
		t.Helper()
		b := s.NewBatch()
		defer b.Discard()
		got, err := b.(engine.BatchReader).DueTimers(upTo, 10)
		if err != nil {
			t.Fatal(err)
		}
		direct, err := s.DueTimers(upTo, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ats []int64
		for _, tm := range got {
			ats = append(ats, tm.At)
		}
		if !reflect.DeepEqual(got, direct) {
			t.Fatalf("batch DueTimers(%d) = %v, store = %v", upTo, got, direct)
		}
		return ats
	}
	if got := due(s, math.MaxInt64); got != nil {
		t.Fatalf("empty store: %v", got)
	}
	if low, _ := s.due.read(); low != math.MaxInt64 {
		t.Fatalf("bound after scanning an empty store = %d", low)
	}
	commit(t, s, func(b engine.Batch) { b.PutTimer(engine.Timer{Address: addr("t", "a"), Name: "x", At: 100}) })
	if got := due(s, 50); got != nil {
		t.Fatalf("at 50: %v", got)
	}
	if low, _ := s.due.read(); low != 100 {
		t.Fatalf("bound = %d, want 100", low)
	}
	if got := due(s, 99); got != nil {
		t.Fatalf("at 99: %v", got)
	}
	if got := due(s, 100); !reflect.DeepEqual(got, []int64{100}) {
		t.Fatalf("at 100: %v", got)
	}
	// A timer put below the raised bound is found at once.
	commit(t, s, func(b engine.Batch) { b.PutTimer(engine.Timer{Address: addr("t", "b"), Name: "x", At: 60}) })
	if got := due(s, 70); !reflect.DeepEqual(got, []int64{60}) {
		t.Fatalf("at 70 after a put at 60: %v", got)
	}
	// A restore resets the bound to "anything may be due".
	snap := snapshotReader(t, s)
	commit(t, s, func(b engine.Batch) { b.DeleteTimer(engine.Timer{Address: addr("t", "b"), Name: "x", At: 60}) })
	if got := due(s, 70); got != nil {
		t.Fatalf("at 70 after the delete: %v", got)
	}
	if err := s.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got := due(s, 70); !reflect.DeepEqual(got, []int64{60}) {
		t.Fatalf("at 70 after the restore: %v", got)
	}
	// A restart starts with no bound.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(dir, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if got := due(db2.Shard(1), 1000); !reflect.DeepEqual(got, []int64{60, 100}) {
		t.Fatalf("after a restart: %v", got)
	}
}
