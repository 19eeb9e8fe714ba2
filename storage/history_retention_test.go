package storage

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/engine"
)

// ScanHistory walks one shard's history rows in key order (address, then
// position) from a HistoryKeyAfter cursor, each with its kind and bytes;
// trim marks are written by PutHistoryTrim, read by HistoryTrimmed, and a
// snapshot carries them (tagTrim is a data keyspace) to the restored store.
func TestHistoryRetention_ScanCursorTrimSnapshot(t *testing.T) {
	db := openDB(t, t.TempDir())
	s, other := db.Shard(1), db.Shard(2)
	commit(t, s, func(b engine.Batch) {
		for i := range 10 {
			kind := engine.HistoryEvent
			if i%4 == 3 {
				kind = engine.HistoryRejection
			}
			b.AppendHistory(addr("acme", fmt.Sprint("e", i%3)), engine.Position{Index: uint64(10 - i), Ordinal: 1}, kind, []byte{byte(i)})
		}
	})
	commit(t, other, func(b engine.Batch) {
		b.AppendHistory(addr("acme", "x"), engine.Position{Index: 1}, engine.HistoryEvent, []byte{1})
	})
	var seen []engine.HistoryRow
	var from []byte
	for slices := 0; ; slices++ {
		if slices > 10 {
			t.Fatal("the cursor does not advance")
		}
		rows, err := s.ScanHistory(from, 3)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, rows...)
		next, err := s.HistoryKeyAfter(from, 3)
		if err != nil {
			t.Fatal(err)
		}
		if next == nil {
			break
		}
		from = next
	}
	if len(seen) != 10 {
		t.Fatalf("the slices saw %d rows, want 10: %v", len(seen), seen)
	}
	for i, r := range seen {
		if i > 0 {
			p := seen[i-1]
			if p.Address.EntityID > r.Address.EntityID || p.Address == r.Address && !r.Pos.After(p.Pos) {
				t.Fatalf("rows out of key order: %v then %v", p, r)
			}
		}
		n := int(r.Data[0])
		if want := fmt.Sprint("e", n%3); r.Address.EntityID != want || r.Pos.Index != uint64(10-n) ||
			(r.Kind == engine.HistoryRejection) != (n%4 == 3) {
			t.Fatalf("row %v does not match what was written", r)
		}
	}

	a := addr("acme", "e1")
	if p, err := s.HistoryTrimmed(a); err != nil || p != (engine.Position{}) {
		t.Fatalf("trim mark before any trim: %v %v", p, err)
	}
	mark := engine.Position{Index: 6, Ordinal: 1}
	commit(t, s, func(b engine.Batch) {
		b.DeleteHistory(a, mark)
		b.(engine.HistoryTrimmer).PutHistoryTrim(a, mark)
	})
	if p, err := s.HistoryTrimmed(a); err != nil || p != mark {
		t.Fatalf("trim mark %v %v, want %v", p, err, mark)
	}
	if p, _ := other.HistoryTrimmed(a); p != (engine.Position{}) {
		t.Fatalf("another shard sees the trim mark %v", p)
	}

	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	restored := openDB(t, t.TempDir()).Shard(1)
	if err := restored.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if p, err := restored.HistoryTrimmed(a); err != nil || p != mark {
		t.Fatalf("restored trim mark %v %v, want %v", p, err, mark)
	}
	if rows, _ := restored.ScanHistory(nil, 100); len(rows) != 9 {
		t.Fatalf("restored %d history rows, want 9", len(rows))
	}
}
