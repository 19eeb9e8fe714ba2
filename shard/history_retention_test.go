package shard_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/shard"
)

// A history sweep pass deletes only records the leader has snapshotted:
// before the first snapshot it proposes nothing although every record is
// past the window; after it, the records at or below the snapshot's index
// go and those written later stay (old as they are) until a later snapshot
// covers them, which a pass that finds such records takes itself (an idle
// shard would never reach its snapshot threshold). Each trimmed entity's
// history starts after its trim mark.
func TestHistoryRetention_PassBoundedByLeaderSnapshot(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	r := openReplica(t, t.TempDir(), func(c *shard.Config) {
		c.HistoryRetention = map[string]time.Duration{"t": time.Second}
		c.SweepInterval, c.SnapshotThreshold = time.Hour, 1<<20
		c.Now = func() time.Time { return time.UnixMilli(now.Load()) }
	})
	count := func() (n int, trimmed int) {
		for i := range 10 {
			a := add(fmt.Sprint("c", i), 0).Address
			recs, _, _, err := r.s.History(a, engine.Position{}, 1000, true)
			if err != nil {
				t.Fatal(err)
			}
			n += len(recs)
			if p, _ := r.s.Store().HistoryTrimmed(a); p != (actor.Position{}) {
				trimmed++
				if len(recs) > 0 && !recs[0].Pos.After(p) {
					t.Fatalf("%s: record %v at or before the trim mark %v", a, recs[0].Pos, p)
				}
			}
		}
		return n, trimmed
	}
	submitAll(t, r.s, 40)
	now.Add(5000)
	before := r.s.Meta().Index
	if err := r.s.HistorySweepPass(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if n, tr := count(); n != 40 || tr != 0 || r.s.Meta().Index != before {
		t.Fatalf("before any snapshot: %d records, %d trimmed, index %d -> %d; want nothing proposed", n, tr, before, r.s.Meta().Index)
	}
	if err := r.s.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := r.s.Submit(ctx(t), add(fmt.Sprint("c", i), 100+i)); err != nil {
			t.Fatal(err)
		}
	}
	now.Add(5000) // the 10 new records are past the window too, but not snapshotted
	if err := r.s.HistorySweepPass(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if n, tr := count(); n != 10 || tr != 10 {
		t.Fatalf("after the snapshot: %d records left, %d entities trimmed; want the 10 unsnapshotted ones, all 10 trimmed", n, tr)
	}
	// No command comes any more, so no snapshot would ever cover the 10
	// (a threshold of 1<<20 entries); the pass that found them waiting took
	// one itself, and the next pass deletes them.
	if err := r.s.HistorySweepPass(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if n, _ := count(); n != 0 {
		t.Fatalf("on an idle shard: %d old records left after a pass that found them past the last snapshot; want none", n)
	}
}
