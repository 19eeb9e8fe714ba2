package storage

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/rhizon/rhizon/engine"
)

// putResults commits results for keys [from, from+n) of entity e, in
// batches of 100.
func putResults(t testing.TB, s *ShardStore, from, n int) {
	t.Helper()
	for i := from; i < from+n; i += 100 {
		commit(t, s, func(b engine.Batch) {
			for j := i; j < min(i+100, from+n); j++ {
				b.PutResult(addr("t", "e"), fmt.Sprintf("key-%d", j), []byte(fmt.Sprintf("result-%d", j)))
			}
		})
	}
}

// requireResults checks that every key in [from, from+n) is found, through
// the store and through a batch (the engine's path), and that keys past the
// range are not.
func requireResults(t *testing.T, s *ShardStore, from, n int) {
	t.Helper()
	b := s.NewBatch().(*batch)
	defer b.Discard()
	for i := from; i < from+n+50; i++ {
		key := fmt.Sprintf("key-%d", i)
		for name, get := range map[string]func() ([]byte, bool, error){
			"store": func() ([]byte, bool, error) { return s.Result(addr("t", "e"), key) },
			"batch": func() ([]byte, bool, error) { return b.Result(addr("t", "e"), key) },
		} {
			v, ok, err := get()
			if err != nil {
				t.Fatalf("%s: Result(%s): %v", name, key, err)
			}
			if want := i < from+n; ok != want || (ok && string(v) != fmt.Sprintf("result-%d", i)) {
				t.Fatalf("%s: Result(%s) = %q, %v; want found=%v", name, key, v, ok, want)
			}
		}
	}
}

// The filter may only say "absent" for a key no write ever stored, whatever
// happened to the shard's keys: commits, a reopen, a restore over a shard
// whose filter was built, Clear.
func TestResultFilterNeverHidesARecord(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s := db.Shard(1)
	requireResults(t, s, 0, 0) // builds the filter of the empty shard
	putResults(t, s, 0, 20000) // several layers
	requireResults(t, s, 0, 20000)
	if s.results.state != filterReady || len(s.results.layers) < 2 {
		t.Fatalf("filter state %d with %d layers, want ready with several", s.results.state, len(s.results.layers))
	}

	// Reopened: built again from the stored keys.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir)
	s = db.Shard(1)
	requireResults(t, s, 0, 20000)

	// Restored over a shard that had its own records and a built filter.
	snap, _ := snapshotBytes(t, s)
	dst := openDB(t, t.TempDir()).Shard(7)
	putResults(t, dst, 30000, 10)
	if _, ok, _ := dst.Result(addr("t", "e"), "key-30000"); !ok {
		t.Fatal("the destination's own record is missing before the restore")
	}
	if err := dst.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	requireResults(t, dst, 0, 20000)
	if _, ok, _ := dst.Result(addr("t", "e"), "key-30000"); ok {
		t.Fatal("a record the restore replaced is still found")
	}

	// Cleared, then written again.
	if err := dst.Clear(); err != nil {
		t.Fatal(err)
	}
	requireResults(t, dst, 0, 0)
	putResults(t, dst, 0, 300)
	requireResults(t, dst, 0, 300)
}

// A write racing with the build of the filter (the first lookup after a
// reset) is either in the scan or added after it: never lost.
func TestResultFilterBuildRacesWithWrites(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	putResults(t, s, 0, 5000)
	for round := range 20 {
		s.results.reset()
		from := 5000 + round*200
		var wg sync.WaitGroup
		wg.Go(func() { putResults(t, s, from, 200) })
		wg.Go(func() {
			for i := range 50 {
				_, _, _ = s.Result(addr("t", "e"), fmt.Sprintf("absent-%d", i))
			}
		})
		wg.Wait()
	}
	requireResults(t, s, 0, 5000+20*200)
}

// Past the node's budget a shard's filter switches off and every lookup
// goes to Badger; a reset gives it another chance.
func TestResultFilterOverBudgetFallsBackToBadger(t *testing.T) {
	opts := testOptions()
	opts.ResultFilterBytes = 3 * bloomFirstBits / 8 // the first two layers
	db, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	s := db.Shard(1)
	requireResults(t, s, 0, 0)
	putResults(t, s, 0, 30000) // needs a third layer
	if s.results.state != filterOff || len(s.results.layers) != 0 || db.budget.used != 0 {
		t.Fatalf("filter state %d, %d layers, %d bytes used; want off, none, 0",
			s.results.state, len(s.results.layers), db.budget.used)
	}
	requireResults(t, s, 0, 30000)

	// Another shard has the whole budget to itself now.
	o := db.Shard(2)
	putResults(t, o, 0, 100)
	requireResults(t, o, 0, 100)
	if o.results.state != filterReady {
		t.Fatalf("second shard's filter state %d, want ready", o.results.state)
	}
}

// A few in a thousand absent keys get a "maybe" (12 bits and 8 probes per
// key, in layers);
// each costs only the Badger read every lookup used to make.
func TestResultFilterFalsePositiveRate(t *testing.T) {
	f := newResultFilter(&filterBudget{max: 1 << 30})
	f.state = filterReady
	for i := range 100000 {
		f.add(fmt.Appendf(nil, "present-%d", i))
	}
	none := func(func([]byte)) error { return nil }
	for i := range 100000 {
		if !f.mayHave(fmt.Appendf(nil, "present-%d", i), none) {
			t.Fatalf("present-%d reported absent", i)
		}
	}
	maybe := 0
	const probes = 100000
	for i := range probes {
		if f.mayHave(fmt.Appendf(nil, "absent-%d", i), none) {
			maybe++
		}
	}
	if rate := float64(maybe) / probes; rate > 0.02 {
		t.Fatalf("%.2f%% of absent keys reported as maybe present, want under 2%%", 100*rate)
	}
	t.Logf("false maybe: %.2f%% over %d layers", 100*float64(maybe)/probes, len(f.layers))
}
