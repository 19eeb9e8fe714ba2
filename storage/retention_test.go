package storage

import (
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/engine"
)

// ScanResults walks one shard's records in key order from a cursor,
// ResultKeyAfter gives the cursor of the next slice, and DeleteResult
// removes a record (lookups then miss it, the result filter's stale "maybe"
// notwithstanding). Another shard's records are never seen.
func TestRetention_ScanCursorDelete(t *testing.T) {
	db := openDB(t, t.TempDir())
	s, other := db.Shard(1), db.Shard(2)
	commit(t, s, func(b engine.Batch) {
		for i := range 10 {
			b.PutResult(addr("acme", fmt.Sprint("e", i%3)), fmt.Sprint("k", i), []byte{byte(i)})
		}
	})
	commit(t, other, func(b engine.Batch) { b.PutResult(addr("acme", "x"), "other", []byte{1}) })

	var seen []string
	var from []byte
	for slices := 0; ; slices++ {
		if slices > 10 {
			t.Fatal("the cursor does not advance")
		}
		rows, err := s.ScanResults(from, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			seen = append(seen, r.Address.EntityID+"/"+r.Key)
		}
		next, err := s.ResultKeyAfter(from, 3)
		if err != nil {
			t.Fatal(err)
		}
		if next == nil {
			if len(rows) > 3 {
				t.Fatalf("slice of %d rows, limit 3", len(rows))
			}
			break
		}
		from = next
	}
	if len(seen) != 10 {
		t.Fatalf("the slices saw %d records, want 10: %v", len(seen), seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] == seen[i-1] {
			t.Fatalf("record %s seen twice", seen[i])
		}
	}
	if _, ok, _ := s.Result(addr("acme", "e0"), "k3"); !ok {
		t.Fatal("k3 missing before the delete")
	}
	commit(t, s, func(b engine.Batch) { b.(engine.ResultDeleter).DeleteResult(addr("acme", "e0"), "k3") })
	if _, ok, _ := s.Result(addr("acme", "e0"), "k3"); ok {
		t.Fatal("k3 still found after DeleteResult")
	}
	rows, err := s.ScanResults(nil, 100)
	if err != nil || len(rows) != 9 {
		t.Fatalf("after the delete: %d rows, %v", len(rows), err)
	}
}
