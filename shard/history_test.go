package shard_test

import (
	"testing"

	"github.com/rhizon/rhizon/engine"
)

// History hands back decoded records, events and (when asked) rejections,
// each at its log position, and pages by the position it returns.
func TestShard_HistoryDecodesEventsAndRejections(t *testing.T) {
	r := openReplica(t, t.TempDir(), nil)
	for i := range 2 {
		if _, err := r.s.Submit(ctx(t), add("h", i)); err != nil {
			t.Fatal(err)
		}
	}
	stale := add("h", 2)
	one := uint64(1)
	stale.ExpectedVersion = &one
	if _, err := r.s.Submit(ctx(t), stale); err != nil {
		t.Fatal(err)
	}
	addr := stale.Address

	recs, _, more, err := r.s.History(addr, engine.Position{}, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || more {
		t.Fatalf("history with rejections: %d records (more %v), want 3", len(recs), more)
	}
	for i, rec := range recs[:2] {
		if rec.Event == nil || rec.Rejection != nil || rec.Event.GetVersion() != uint64(i+1) {
			t.Fatalf("record %d: want the event of version %d, got %+v", i, i+1, rec)
		}
		if rec.Pos.Index != rec.Event.GetIndex() || rec.Pos.Ordinal != rec.Event.GetOrdinal() {
			t.Fatalf("record %d at %v, its event says %d/%d", i, rec.Pos, rec.Event.GetIndex(), rec.Event.GetOrdinal())
		}
	}
	if rj := recs[2].Rejection; recs[2].Event != nil || rj == nil || rj.GetCommandId() != stale.ID || rj.ActualVersion != 2 {
		t.Fatalf("record 2: want the rejection of %s at version 2, got %+v", stale.ID, recs[2])
	}

	events, next, more, err := r.s.History(addr, engine.Position{}, 1, false)
	if err != nil || len(events) != 1 || !more || next != events[0].Pos {
		t.Fatalf("first page: %d records, next %v, more %v, err %v", len(events), next, more, err)
	}
	rest, _, more, err := r.s.History(addr, next, 10, false)
	if err != nil || len(rest) != 1 || more || rest[0].Event.GetVersion() != 2 {
		t.Fatalf("second page without rejections: %+v, more %v, err %v", rest, more, err)
	}
}
