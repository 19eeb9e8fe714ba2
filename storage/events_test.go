package storage

import (
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/engine"
)

// TestEventsInPositionOrder writes events of several entities interleaved
// with rejections and another shard's events, and pages through them: every
// event of the shard comes back once, in position order, from any start.
func TestEventsInPositionOrder(t *testing.T) {
	db := openDB(t, t.TempDir())
	s, other := db.Shard(3), db.Shard(4)
	var want []engine.Position
	for i := uint64(1); i <= 30; i++ {
		a := addr("t", fmt.Sprint("e", i%4)) // entity keys do not sort like positions
		commit(t, s, func(b engine.Batch) {
			b.AppendHistory(a, engine.Position{Index: i, Ordinal: 1}, engine.HistoryEvent, fmt.Appendf(nil, "ev%d.1", i))
			if i%3 == 0 {
				b.AppendHistory(a, engine.Position{Index: i, Ordinal: 2}, engine.HistoryRejection, []byte("rej"))
			} else {
				b.AppendHistory(a, engine.Position{Index: i, Ordinal: 2}, engine.HistoryEvent, fmt.Appendf(nil, "ev%d.2", i))
			}
		})
		commit(t, other, func(b engine.Batch) {
			b.AppendHistory(a, engine.Position{Index: i, Ordinal: 1}, engine.HistoryEvent, []byte("other"))
		})
		want = append(want, engine.Position{Index: i, Ordinal: 1})
		if i%3 != 0 {
			want = append(want, engine.Position{Index: i, Ordinal: 2})
		}
	}

	for _, limit := range []int{1, 7, len(want), 1000} {
		var got []engine.Position
		from := engine.Position{}
		for pages := 0; ; pages++ {
			if pages > len(want)+1 {
				t.Fatalf("limit %d: no end after %d pages", limit, pages)
			}
			evs, next, done, err := s.Events(from, limit)
			if err != nil {
				t.Fatalf("Events: %v", err)
			}
			if len(evs) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(evs))
			}
			for _, ev := range evs {
				if ev.Kind != engine.HistoryEvent {
					t.Fatalf("record at %v is kind %d", ev.Pos, ev.Kind)
				}
				if w := fmt.Sprintf("ev%d.%d", ev.Pos.Index, ev.Pos.Ordinal); string(ev.Data) != w {
					t.Fatalf("record at %v = %q, want %q", ev.Pos, ev.Data, w)
				}
				got = append(got, ev.Pos)
			}
			from = next
			if done {
				break
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("limit %d: positions\n%v\nwant\n%v", limit, got, want)
		}
	}

	// from is inclusive, and may fall between events.
	evs, _, _, err := s.Events(engine.Position{Index: 3, Ordinal: 2}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Pos != (engine.Position{Index: 4, Ordinal: 1}) || evs[1].Pos != (engine.Position{Index: 4, Ordinal: 2}) {
		t.Fatalf("from 3.2: %v", evs)
	}
	evs, next, done, err := s.Events(engine.Position{Index: 31}, 5)
	if err != nil || len(evs) != 0 || !done || next != (engine.Position{Index: 31}) {
		t.Fatalf("past the end: %v %v %v %v", evs, next, done, err)
	}
}
