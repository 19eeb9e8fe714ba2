package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/testkit"
)

func TestShardStoreRoundTrip(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(7)
	a := addr("t1", "e1")

	// A new store reads as empty.
	if m, err := s.Meta(); err != nil || m != (engine.Meta{}) {
		t.Fatalf("Meta on new store = %+v, %v", m, err)
	}
	if e, err := s.Entity(a); err != nil || e.Version != 0 || e.State != nil {
		t.Fatalf("Entity on new store = %+v, %v", e, err)
	}
	if _, ok, err := s.Result(a, "k"); ok || err != nil {
		t.Fatalf("Result on new store = %v, %v", ok, err)
	}
	if _, ok, err := s.Timer(a, "n"); ok || err != nil {
		t.Fatalf("Timer on new store = %v, %v", ok, err)
	}

	meta := engine.Meta{Index: 42, At: -3, Hash: [32]byte{1, 2, 3, 31: 9}}
	commit(t, s, func(b engine.Batch) {
		b.PutEntity(a, engine.Entity{Version: 3, State: []byte(`{"n":3}`)})
		b.AppendHistory(a, engine.Position{Index: 42, Ordinal: 1}, engine.HistoryEvent, []byte("ev1"))
		b.AppendHistory(a, engine.Position{Index: 42, Ordinal: 2}, engine.HistoryRejection, []byte("rj1"))
		b.PutResult(a, "idem/1", []byte("res1"))
		b.PutResult(a, "", []byte("empty key"))
		b.PutOutbox(engine.Position{Index: 42, Ordinal: 3}, []byte("cmd1"))
		b.PutTimer(engine.Timer{Address: a, Name: "wake", At: 1000, Payload: []byte("p")})
		b.PutTimer(engine.Timer{Address: a, Name: "bare", At: 5})
		b.SetMeta(meta)
	})

	if m, err := s.Meta(); err != nil || m != meta {
		t.Fatalf("Meta = %+v, %v; want %+v", m, err, meta)
	}
	if e, err := s.Entity(a); err != nil || e.Version != 3 || string(e.State) != `{"n":3}` {
		t.Fatalf("Entity = %+v, %v", e, err)
	}
	if r, ok, err := s.Result(a, "idem/1"); err != nil || !ok || string(r) != "res1" {
		t.Fatalf("Result = %q, %v, %v", r, ok, err)
	}
	if r, ok, err := s.Result(a, ""); err != nil || !ok || string(r) != "empty key" {
		t.Fatalf("Result(empty key) = %q, %v, %v", r, ok, err)
	}
	if _, ok, _ := s.Result(a, "idem/"); ok {
		t.Fatal("Result matched a prefix of a stored idempotency key")
	}
	want := engine.Timer{Address: a, Name: "wake", At: 1000, Payload: []byte("p")}
	if tm, ok, err := s.Timer(a, "wake"); err != nil || !ok || !reflect.DeepEqual(tm, want) {
		t.Fatalf("Timer = %+v, %v, %v", tm, ok, err)
	}
	if tm, ok, err := s.Timer(a, "bare"); err != nil || !ok || tm.At != 5 || tm.Payload != nil {
		t.Fatalf("Timer(bare) = %+v, %v, %v", tm, ok, err)
	}
	recs, next, more, err := s.History(a, engine.Position{}, 10, true)
	if err != nil || more || len(recs) != 2 || next != (engine.Position{Index: 42, Ordinal: 2}) {
		t.Fatalf("History = %+v, %+v, %v, %v", recs, next, more, err)
	}
	if recs[0].Kind != engine.HistoryEvent || string(recs[0].Data) != "ev1" ||
		recs[1].Kind != engine.HistoryRejection || string(recs[1].Data) != "rj1" {
		t.Fatalf("History records = %+v", recs)
	}
	rows, err := s.Outbox(engine.Position{}, 10)
	if err != nil || len(rows) != 1 || rows[0].Pos != (engine.Position{Index: 42, Ordinal: 3}) || string(rows[0].Data) != "cmd1" {
		t.Fatalf("Outbox = %+v, %v", rows, err)
	}

	// Overwrite and delete.
	commit(t, s, func(b engine.Batch) {
		b.PutEntity(a, engine.Entity{Version: 4})
		b.DeleteTimer(engine.Timer{Address: a, Name: "wake", At: 1000})
	})
	if e, _ := s.Entity(a); e.Version != 4 || e.State != nil {
		t.Fatalf("Entity after overwrite = %+v", e)
	}
	if _, ok, _ := s.Timer(a, "wake"); ok {
		t.Fatal("timer survived DeleteTimer")
	}
	if due, _ := s.DueTimers(math.MaxInt64, 10); len(due) != 1 || due[0].Name != "bare" {
		t.Fatalf("DueTimers after delete = %+v", due)
	}
}

func TestShardIsolation(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	// Adjacent ids and the ends of the id space: prefixes must not bleed.
	ids := []uint32{0, 1, 2, 256, math.MaxUint32}
	a := addr("t", "e")
	for _, id := range ids {
		s := db.Shard(id)
		tag := []byte(fmt.Sprint(id))
		commit(t, s, func(b engine.Batch) {
			b.PutEntity(a, engine.Entity{Version: uint64(id) + 1, State: tag})
			b.AppendHistory(a, engine.Position{Index: 1, Ordinal: 1}, engine.HistoryEvent, tag)
			b.AppendHistory(a, engine.Position{Index: 1, Ordinal: 2}, engine.HistoryRejection, tag)
			b.PutResult(a, "k", tag)
			b.PutOutbox(engine.Position{Index: 1, Ordinal: 3}, tag)
			b.PutTimer(engine.Timer{Address: a, Name: "t", At: int64(id), Payload: tag})
			b.SetMeta(engine.Meta{Index: uint64(id) + 1})
		})
	}
	for _, id := range ids {
		s := db.Shard(id)
		tag := fmt.Sprint(id)
		if e, _ := s.Entity(a); e.Version != uint64(id)+1 || string(e.State) != tag {
			t.Errorf("shard %d: Entity = %+v", id, e)
		}
		if r, _, _ := s.Result(a, "k"); string(r) != tag {
			t.Errorf("shard %d: Result = %q", id, r)
		}
		if m, _ := s.Meta(); m.Index != uint64(id)+1 {
			t.Errorf("shard %d: Meta = %+v", id, m)
		}
		due, err := s.DueTimers(math.MaxInt64, 100)
		if err != nil || len(due) != 1 || string(due[0].Payload) != tag {
			t.Errorf("shard %d: DueTimers = %+v, %v", id, due, err)
		}
		recs, _, _, err := s.History(a, engine.Position{}, 100, true)
		if err != nil || len(recs) != 2 || string(recs[0].Data) != tag || string(recs[1].Data) != tag {
			t.Errorf("shard %d: History = %+v, %v", id, recs, err)
		}
		rows, err := s.Outbox(engine.Position{}, 100)
		if err != nil || len(rows) != 1 || string(rows[0].Data) != tag {
			t.Errorf("shard %d: Outbox = %+v, %v", id, rows, err)
		}
	}
	// A shard never written sees nothing.
	empty := db.Shard(3)
	if due, _ := empty.DueTimers(math.MaxInt64, 100); len(due) != 0 {
		t.Errorf("empty shard DueTimers = %+v", due)
	}
	if recs, _, _, _ := empty.History(a, engine.Position{}, 100, true); len(recs) != 0 {
		t.Errorf("empty shard History = %+v", recs)
	}
	if len(dump(t, empty)) != 0 {
		t.Error("empty shard has keys")
	}
	// Clearing one shard leaves its neighbours alone.
	if err := db.Shard(1).Clear(); err != nil {
		t.Fatal(err)
	}
	if len(dump(t, db.Shard(1))) != 0 {
		t.Error("Clear left keys")
	}
	for _, id := range []uint32{0, 2} {
		if e, _ := db.Shard(id).Entity(a); e.Version != uint64(id)+1 {
			t.Errorf("Clear of shard 1 touched shard %d", id)
		}
	}
	// Reopening walks every shard prefix, up to the last possible id.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir)
	if e, _ := db.Shard(math.MaxUint32).Entity(a); e.Version != math.MaxUint32+1 {
		t.Errorf("shard MaxUint32 after reopen: %+v", e)
	}
}

func TestHistoryNoBleedBetweenEntities(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	// "e" is a string prefix of "e1"; the length-prefixed address key keeps
	// their histories apart, and tenants differ only by length.
	addrs := []actor.Address{addr("t", "e"), addr("t", "e1"), addr("tt", "e"), addr("t", "e\x00")}
	for i, a := range addrs {
		commit(t, s, func(b engine.Batch) {
			b.AppendHistory(a, engine.Position{Index: uint64(i + 1), Ordinal: 1}, engine.HistoryEvent, []byte(a.String()))
		})
	}
	for _, a := range addrs {
		recs, _, _, err := s.History(a, engine.Position{}, 10, true)
		if err != nil || len(recs) != 1 || string(recs[0].Data) != a.String() {
			t.Errorf("History(%q) = %+v, %v", a, recs, err)
		}
	}
}

func TestDueTimersOrder(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(9)
	ats := []int64{math.MinInt64, -1000, -1, 0, 0, 1, 1, 1, 999, math.MaxInt64}
	var all []engine.Timer
	commit(t, s, func(b engine.Batch) {
		for i, at := range ats {
			for j, a := range []actor.Address{addr("t", "b"), addr("t", "a"), addr("tenant-long", "a"), addr("t", "aa")} {
				name := fmt.Sprintf("n%d", (i*7+j)%3)
				tm := engine.Timer{Address: a, Name: name + fmt.Sprint(i), At: at, Payload: []byte{byte(i), byte(j)}}
				b.PutTimer(tm)
				all = append(all, tm)
			}
		}
	})
	sort.Slice(all, func(i, j int) bool {
		x, y := all[i], all[j]
		if x.At != y.At {
			return x.At < y.At
		}
		if c := bytes.Compare(x.Address.Key(), y.Address.Key()); c != 0 {
			return c < 0
		}
		return x.Name < y.Name
	})
	got, err := s.DueTimers(math.MaxInt64, len(all)+5)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, all) {
		t.Fatalf("DueTimers order:\n got %v\nwant %v", got, all)
	}
	// upTo is inclusive and cuts negative, zero and positive times right.
	for _, upTo := range []int64{math.MinInt64, -1001, -1, 0, 1, 998, 999} {
		var want []engine.Timer
		for _, tm := range all {
			if tm.At <= upTo {
				want = append(want, tm)
			}
		}
		got, err := s.DueTimers(upTo, 1000)
		if err != nil || len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Errorf("DueTimers(%d) = %d timers, want %d (%v)", upTo, len(got), len(want), err)
		}
	}
	// limit takes the first ones.
	if got, _ := s.DueTimers(math.MaxInt64, 3); !reflect.DeepEqual(got, all[:3]) {
		t.Errorf("DueTimers limit 3 = %v", got)
	}
	if got, _ := s.DueTimers(math.MaxInt64, 0); len(got) != 0 {
		t.Errorf("DueTimers limit 0 = %v", got)
	}
}

func TestTimerIndexStaysConsistent(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	a := addr("t", "e")
	// Moving a timer without deleting it first leaves one due entry.
	commit(t, s, func(b engine.Batch) { b.PutTimer(engine.Timer{Address: a, Name: "x", At: 10}) })
	commit(t, s, func(b engine.Batch) { b.PutTimer(engine.Timer{Address: a, Name: "x", At: 20, Payload: []byte("2")}) })
	due, _ := s.DueTimers(math.MaxInt64, 10)
	if len(due) != 1 || due[0].At != 20 {
		t.Fatalf("after move DueTimers = %+v", due)
	}
	// A delete naming the wrong time still removes the stored due entry.
	commit(t, s, func(b engine.Batch) { b.DeleteTimer(engine.Timer{Address: a, Name: "x", At: 10}) })
	if due, _ := s.DueTimers(math.MaxInt64, 10); len(due) != 0 {
		t.Fatalf("after delete DueTimers = %+v", due)
	}
	// Within one batch: delete-then-put, put-then-delete, put-then-move.
	commit(t, s, func(b engine.Batch) {
		b.PutTimer(engine.Timer{Address: a, Name: "y", At: 1})
		b.DeleteTimer(engine.Timer{Address: a, Name: "y", At: 1})
		b.DeleteTimer(engine.Timer{Address: a, Name: "z", At: 5})
		b.PutTimer(engine.Timer{Address: a, Name: "z", At: 6})
		b.PutTimer(engine.Timer{Address: a, Name: "w", At: 7})
		b.PutTimer(engine.Timer{Address: a, Name: "w", At: 8})
	})
	due, _ = s.DueTimers(math.MaxInt64, 10)
	if len(due) != 2 || due[0].Name != "z" || due[0].At != 6 || due[1].Name != "w" || due[1].At != 8 {
		t.Fatalf("after mixed batch DueTimers = %+v", due)
	}
	if _, ok, _ := s.Timer(a, "y"); ok {
		t.Fatal("timer y exists")
	}
}

func TestHistoryPaging(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	a := addr("t", "e")
	type rec struct {
		pos  engine.Position
		kind engine.HistoryKind
	}
	var all []rec
	// Positions across several entries; every third record a rejection.
	commit(t, s, func(b engine.Batch) {
		n := 0
		for idx := uint64(1); idx <= 5; idx++ {
			for ord := uint32(1); ord <= 3; ord++ {
				kind := engine.HistoryEvent
				if n%3 == 1 {
					kind = engine.HistoryRejection
				}
				p := engine.Position{Index: idx, Ordinal: ord}
				b.AppendHistory(a, p, kind, []byte(fmt.Sprint(p)))
				all = append(all, rec{p, kind})
				n++
			}
		}
		// A run of trailing rejections.
		for ord := uint32(1); ord <= 4; ord++ {
			p := engine.Position{Index: 9, Ordinal: ord}
			b.AppendHistory(a, p, engine.HistoryRejection, []byte(fmt.Sprint(p)))
			all = append(all, rec{p, engine.HistoryRejection})
		}
	})
	for _, include := range []bool{true, false} {
		for _, limit := range []int{1, 2, 3, 7, 100} {
			var want []engine.Position
			for _, r := range all {
				if include || r.kind == engine.HistoryEvent {
					want = append(want, r.pos)
				}
			}
			var got []engine.Position
			after := engine.Position{}
			for pages := 0; ; pages++ {
				if pages > len(all)+2 {
					t.Fatalf("include=%v limit=%d: paging does not end", include, limit)
				}
				recs, next, more, err := s.History(a, after, limit, include)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) > limit {
					t.Fatalf("page of %d > limit %d", len(recs), limit)
				}
				for _, r := range recs {
					if string(r.Data) != fmt.Sprint(r.Pos) {
						t.Fatalf("record %v data %q", r.Pos, r.Data)
					}
					if !include && r.Kind == engine.HistoryRejection {
						t.Fatalf("rejection returned with includeRejections=false")
					}
					got = append(got, r.Pos)
				}
				if !more {
					break
				}
				if len(recs) == 0 {
					t.Fatalf("more with an empty page")
				}
				after = next
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("include=%v limit=%d: got %v want %v", include, limit, got, want)
			}
		}
	}
	// Starting from a middle position excludes it.
	recs, _, _, _ := s.History(a, engine.Position{Index: 2, Ordinal: 2}, 1, true)
	if len(recs) != 1 || recs[0].Pos != (engine.Position{Index: 2, Ordinal: 3}) {
		t.Errorf("History after {2 2} = %+v", recs)
	}
	// Past the end: nothing, and next stays put.
	end := engine.Position{Index: 100}
	recs, next, more, _ := s.History(a, end, 5, true)
	if len(recs) != 0 || more || next != end {
		t.Errorf("History past end = %+v %v %v", recs, next, more)
	}
	// Skipping only rejections moves next past them so the caller does not rescan.
	recs, next, more, _ = s.History(a, engine.Position{Index: 5, Ordinal: 3}, 5, false)
	if len(recs) != 0 || more || next != (engine.Position{Index: 9, Ordinal: 4}) {
		t.Errorf("History over trailing rejections = %+v %v %v", recs, next, more)
	}
}

func TestHistoryScanBudget(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	a := addr("t", "e")
	n := HistoryScanBudget + 10
	commit(t, s, func(b engine.Batch) {
		for i := range n {
			b.AppendHistory(a, engine.Position{Index: 1, Ordinal: uint32(i + 1)}, engine.HistoryRejection, []byte("x"))
		}
		b.AppendHistory(a, engine.Position{Index: 2, Ordinal: 1}, engine.HistoryEvent, []byte("ev"))
	})
	recs, next, more, err := s.History(a, engine.Position{}, 10, false)
	if err != nil || len(recs) != 0 || !more || next != (engine.Position{Index: 1, Ordinal: uint32(HistoryScanBudget)}) {
		t.Fatalf("first page = %d recs, next %v, more %v, %v", len(recs), next, more, err)
	}
	recs, _, more, err = s.History(a, next, 10, false)
	if err != nil || len(recs) != 1 || string(recs[0].Data) != "ev" || more {
		t.Fatalf("second page = %+v, more %v, %v", recs, more, err)
	}
}

func TestBatchDiscardWritesNothing(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	a := addr("t", "e")
	b := s.NewBatch()
	b.PutEntity(a, engine.Entity{Version: 1, State: []byte("s")})
	b.AppendHistory(a, engine.Position{Index: 1, Ordinal: 1}, engine.HistoryEvent, []byte("e"))
	b.PutResult(a, "k", []byte("r"))
	b.PutOutbox(engine.Position{Index: 1, Ordinal: 2}, []byte("o"))
	b.PutTimer(engine.Timer{Address: a, Name: "t", At: 1})
	b.SetMeta(engine.Meta{Index: 1})
	b.Discard()
	if err := b.Commit(); err == nil {
		t.Fatal("Commit after Discard succeeded")
	}
	if d := dump(t, s); len(d) != 0 {
		t.Fatalf("discarded batch wrote %d keys", len(d))
	}
	// A second Commit of a committed batch fails too.
	b = s.NewBatch()
	b.SetMeta(engine.Meta{Index: 2})
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err == nil {
		t.Fatal("second Commit succeeded")
	}
}

// bigBatch fills a batch well past one Badger transaction.
func bigBatch(s *ShardStore, index uint64, limit int64) (engine.Batch, int) {
	b := s.NewBatch()
	val := bytes.Repeat([]byte("v"), 64<<10) // below the value threshold: counts in full
	n := int(limit/int64(len(val))) * 3
	for i := range n {
		a := addr("t", fmt.Sprintf("e%04d", i))
		b.PutEntity(a, engine.Entity{Version: index, State: val})
		b.PutTimer(engine.Timer{Address: a, Name: "t", At: int64(index)})
	}
	b.SetMeta(engine.Meta{Index: index})
	return b, n
}

func TestLargeBatchCommitsAtomically(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s := db.Shard(3)
	limit, _ := db.BatchLimits()
	b, n := bigBatch(s, 1, limit)
	if err := b.Commit(); err != nil {
		t.Fatalf("large Commit: %v", err)
	}
	if m, _ := s.Meta(); m.Index != 1 {
		t.Fatalf("Meta = %+v", m)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if e, _ := s.Entity(addr("t", fmt.Sprintf("e%04d", i))); e.Version != 1 {
			t.Fatalf("entity %d = %+v", i, e)
		}
	}
	if due, _ := s.DueTimers(math.MaxInt64, n+1); len(due) != n {
		t.Fatalf("DueTimers = %d, want %d", len(due), n)
	}
	// The journal is gone.
	for k := range dump(t, s) {
		if k[0] >= tagJournal {
			t.Fatalf("internal key %x left behind", k)
		}
	}
}

func TestLargeBatchRecovery(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	a := addr("t", "e")
	ops := []op{
		{key: entityKey(3, a.Key()), val: append(make([]byte, 8), "state"...)},
		{key: metaKey(3), val: encodeMeta(engine.Meta{Index: 5})},
	}

	// Staged but not committed: a crash here must apply nothing.
	stage := func() {
		staged := make([]op, len(ops))
		for i, o := range ops {
			staged[i] = op{key: journalKey(3, uint32(i)), val: encodeJournalOp(o)}
		}
		if err := db.kv.writeChunked(staged); err != nil {
			t.Fatal(err)
		}
	}
	stage()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir)
	s := db.Shard(3)
	if d := dump(t, s); len(d) != 0 {
		t.Fatalf("uncommitted journal left %d keys", len(d))
	}

	// Staged and committed: a crash here must apply everything on reopen.
	stage()
	err := db.kv.db.Update(func(txn *badger.Txn) error {
		return txn.Set(tagPrefix(3, tagJournalCommit), []byte{0, 0, 0, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, dir)
	s = db.Shard(3)
	if m, err := s.Meta(); err != nil || m.Index != 5 {
		t.Fatalf("Meta after recovery = %+v, %v", m, err)
	}
	if e, _ := s.Entity(a); string(e.State) != "state" {
		t.Fatalf("Entity after recovery = %+v", e)
	}
	if d := dump(t, s); len(d) != 2 {
		t.Fatalf("after recovery %d keys, want 2", len(d))
	}

	// Meta also finishes a committed journal without a reopen.
	ops[1].val = encodeMeta(engine.Meta{Index: 6})
	stage()
	err = db.kv.db.Update(func(txn *badger.Txn) error {
		return txn.Set(tagPrefix(3, tagJournalCommit), []byte{0, 0, 0, 2})
	})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.Meta(); err != nil || m.Index != 6 {
		t.Fatalf("Meta with pending journal = %+v, %v", m, err)
	}
}

func TestOutboxPagingAndDelete(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	var all []engine.Position
	for idx := uint64(1); idx <= 4; idx++ {
		commit(t, s, func(b engine.Batch) {
			for ord := uint32(1); ord <= 3; ord++ {
				p := engine.Position{Index: idx, Ordinal: ord}
				b.PutOutbox(p, []byte(fmt.Sprint(p)))
				all = append(all, p)
			}
		})
	}
	rows, err := s.Outbox(engine.Position{Index: 2, Ordinal: 1}, 4)
	if err != nil || len(rows) != 4 || rows[0].Pos != all[4] || rows[3].Pos != all[7] {
		t.Fatalf("Outbox page = %+v, %v", rows, err)
	}
	// The delete is part of an entry's batch, which also adds new rows.
	commit(t, s, func(b engine.Batch) {
		b.DeleteOutbox(engine.Position{}, engine.Position{Index: 3, Ordinal: 2})
		b.PutOutbox(engine.Position{Index: 5, Ordinal: 1}, []byte("new"))
	})
	rows, _ = s.Outbox(engine.Position{}, 100)
	if len(rows) != 5 || rows[0].Pos != (engine.Position{Index: 3, Ordinal: 3}) || rows[4].Pos != (engine.Position{Index: 5, Ordinal: 1}) {
		t.Fatalf("Outbox after delete = %+v", rows)
	}
}

func TestReopenKeepsState(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	s := db.Shard(5)
	a := addr("t", "e")
	commit(t, s, func(b engine.Batch) {
		b.PutEntity(a, engine.Entity{Version: 1, State: []byte("x")})
		b.PutTimer(engine.Timer{Address: a, Name: "t", At: -7})
		b.AppendHistory(a, engine.Position{Index: 1, Ordinal: 1}, engine.HistoryEvent, []byte("e"))
		b.SetMeta(engine.Meta{Index: 1, At: 99})
	})
	before := dump(t, s)
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close = %v", err)
	}
	db = openDB(t, dir)
	equalDumps(t, dump(t, db.Shard(5)), before)
	if m, _ := db.Shard(5).Meta(); m.Index != 1 || m.At != 99 {
		t.Fatalf("Meta after reopen = %+v", m)
	}
}

func TestDirectoriesAreNotInterchangeable(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRaft(dir, testOptions()); err == nil || !strings.Contains(err.Error(), "raft") {
		t.Fatalf("OpenRaft on a state directory = %v", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	for name, o := range map[string]Options{
		"one compactor":  {NumCompactors: 1},
		"tiny memtable":  {MemTableSize: 1 << 10},
		"negative cache": {MemTableSize: -1},
	} {
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// recordHandler keeps the levels and messages of the records it handles.
type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Level.String()+" "+r.Message)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestBadgerLogsWarningsOnly(t *testing.T) {
	h := &recordHandler{}
	o := testOptions()
	o.Logger = slog.New(h)
	db, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	bl := badgerLogger{l: o.Logger}
	bl.Infof("info %d", 1)
	bl.Debugf("debug %d", 2)
	bl.Warningf("warn %d\n", 3)
	bl.Errorf("error %d", 4)
	h.mu.Lock()
	defer h.mu.Unlock()
	// Opening and closing Badger logs only at info level: nothing got through.
	if want := []string{"WARN warn 3", "ERROR error 4"}; !reflect.DeepEqual(h.msgs, want) {
		t.Fatalf("logged %q, want %q", h.msgs, want)
	}
}

func TestValueLogGCRuns(t *testing.T) {
	o := testOptions()
	o.GCInterval = 5 * time.Millisecond
	o.ValueLogFileSize = 1 << 20
	db, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	s := db.Shard(1)
	big := bytes.Repeat([]byte("v"), 700<<10) // above the 8 MiB memtable's threshold: value log
	for i := range 20 {
		commit(t, s, func(b engine.Batch) { b.PutEntity(addr("t", "e"), engine.Entity{Version: uint64(i), State: big}) })
	}
	// At least ten passes of the 5 ms loop, during the writes and after
	// them, before the read and the Close that must not be upset by them.
	testkit.Eventually(t, 10*time.Second, "ten value-log GC passes", func() (bool, string) {
		n := db.kv.gcPasses.Load()
		return n >= 10, fmt.Sprintf("%d passes", n)
	})
	if e, err := s.Entity(addr("t", "e")); err != nil || e.Version != 19 || len(e.State) != len(big) {
		t.Fatalf("Entity = %d bytes v%d, %v", len(e.State), e.Version, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestRestoreStagesInTempDir(t *testing.T) {
	o := testOptions()
	o.TempDir = t.TempDir()
	db, err := Open(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fill(t, db.Shard(1), 0, 3)
	raw, want := snapshotBytes(t, db.Shard(1))
	if err := db.Shard(2).Restore(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	equalDumps(t, dump(t, db.Shard(2)), want)
	if left, _ := os.ReadDir(o.TempDir); len(left) != 0 {
		t.Fatalf("TempDir holds %d files", len(left))
	}
}

// Badger's size errors end in a hex dump of the whole key or value (1 KiB);
// the error a failed commit returns, which ends up in the node's log, is
// the first line only.
func TestOversizedValueErrorHasNoDump(t *testing.T) {
	opts := testOptions()
	opts.ValueLogFileSize = 2 << 20
	db, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	b := db.Shard(1).NewBatch()
	b.(*batch).put(entityKey(1, addr("t", "e").Key()), make([]byte, 3<<20))
	err = b.Commit()
	if err == nil {
		t.Fatal("a value over the value-log file size was committed")
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || len(msg) > 200 || !strings.Contains(msg, "exceeded") {
		t.Fatalf("error %q (%d bytes): want one short line that says what exceeded the limit", msg, len(msg))
	}
	t.Log(err)
}

// A history page stops once it holds HistoryPageBytes of records (at least
// one record), so a page of large events stays within the gRPC message
// limits between nodes and at the client whatever page size was asked for.
func TestHistoryPagesAreBoundedByBytes(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	a := addr("t", "big")
	ev := bytes.Repeat([]byte("x"), 1<<20)
	n := HistoryPageBytes/len(ev) + 3
	for i := range n {
		commit(t, s, func(b engine.Batch) {
			b.AppendHistory(a, engine.Position{Index: uint64(i + 1), Ordinal: 1}, engine.HistoryEvent, ev)
		})
	}
	var after engine.Position
	got, pages := 0, 0
	for {
		recs, next, more, err := s.History(a, after, 1000, true)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		size := 0
		for _, r := range recs {
			size += len(r.Data)
		}
		if size > HistoryPageBytes+len(ev) {
			t.Fatalf("page %d holds %d bytes in %d records; the bound is %d plus one record", pages, size, len(recs), HistoryPageBytes)
		}
		if more && len(recs) == 0 {
			t.Fatalf("page %d is empty but says more follow", pages)
		}
		got += len(recs)
		after = next
		if !more {
			break
		}
	}
	if got != n || pages < 2 {
		t.Fatalf("read %d records in %d pages, want %d in at least 2", got, pages, n)
	}
}

// SpreadMemTable draws a new database's memtable size at random, up to
// MemTableSpread above the size asked for, and every later open keeps it.
func TestOpen_SpreadMemTableDrawsOnceWithinBounds(t *testing.T) {
	opts := testOptions()
	base := opts.MemTableSize
	hi := int64(float64(base) * (1 + MemTableSpread))
	spread := opts
	spread.SpreadMemTable = true
	open := func(dir string, o Options) int64 {
		t.Helper()
		db, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		return db.MemTableSize()
	}
	seen := map[int64]bool{}
	for range 4 {
		dir := t.TempDir()
		size := open(dir, spread)
		if size < base || size > hi {
			t.Fatalf("memtable size %d outside [%d, %d]", size, base, hi)
		}
		seen[size] = true
		if again := open(dir, spread); again != size {
			t.Fatalf("reopened with SpreadMemTable: memtable size %d, first open drew %d", again, size)
		}
		if again := open(dir, opts); again != size {
			t.Fatalf("reopened without SpreadMemTable (as a tool does): memtable size %d, first open drew %d", again, size)
		}
	}
	if len(seen) < 2 {
		t.Fatalf("four new databases all drew memtable size %v: not spread", seen)
	}
	if got := openDB(t, t.TempDir()).MemTableSize(); got != base {
		t.Fatalf("without SpreadMemTable: memtable size %d, want %d", got, base)
	}
}

// Badger replays an unflushed memtable into an arena of the size it is
// opened with and ends the process when it does not fit. A crash image of
// a database whose drawn memtable was nearly full must open with any size
// asked for, as a node restarting with a new draw or a tool with the
// default would.
func TestOpen_CrashImageOfASpreadMemTableReopens(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SpreadMemTable = true
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	s := db.Shard(1)
	value := bytes.Repeat([]byte("v"), 4<<10)
	// Fill the active memtable to about 90%: no flush yet, all of it only
	// in the memtable's write-ahead file.
	n := int(db.MemTableSize()*9/10) / (len(value) + 200)
	for i := range n {
		b := s.NewBatch()
		b.PutEntity(addr("t", fmt.Sprintf("e-%06d", i)), engine.Entity{Version: 1, State: value})
		b.SetMeta(engine.Meta{Index: uint64(i + 1)})
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	image := t.TempDir()
	copyDir(t, dir, image) // what a kill -9 leaves: the files as they are
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	small := testOptions()
	small.MemTableSize = 2 << 20
	for _, o := range []Options{small, opts} {
		db2, err := Open(image, o)
		if err != nil {
			t.Fatal(err)
		}
		m, err := db2.Shard(1).Meta()
		if err != nil || m.Index != uint64(n) {
			t.Fatalf("crash image reopened: meta %+v, %v; want index %d", m, err, n)
		}
		if err := db2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
