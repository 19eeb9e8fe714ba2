package memstore_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/engine/memstore"
	"github.com/rhizon/rhizon/storage"
)

var testOptions = storage.Options{
	MemTableSize: 8 << 20, BlockCacheSize: 1 << 20, IndexCacheSize: 1 << 20,
	ValueLogFileSize: 4 << 20, GCInterval: -1,
}

// TestStore_MatchesBadger writes random batches (every Batch operation, in
// the orders the engine makes them, some discarded) to memstore and to the
// Badger store and, after each, compares everything either can read.
// Replay's verdicts rest on memstore behaving as the store the recorded run
// used.
func TestStore_MatchesBadger(t *testing.T) {
	db, err := storage.Open(t.TempDir(), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	shard := uint32(0)
	rapid.Check(t, func(rt *rapid.T) {
		shard++ // a fresh keyspace per run
		bad, mem := db.Shard(shard), memstore.New()
		addrs := []actor.Address{
			{Tenant: "a", Workspace: "w", ActorType: "t", EntityID: "e"},
			{Tenant: "a", Workspace: "w", ActorType: "t", EntityID: "e2"},
			{Tenant: "ab", Workspace: "w", ActorType: "t", EntityID: "e"},
		}
		names := []string{"n", "n2", "m"}
		hist := make([][]engine.Position, len(addrs)) // per address, as committed
		var outboxFrom engine.Position
		for idx := uint64(1); idx <= uint64(rapid.IntRange(1, 20).Draw(rt, "batches")); idx++ {
			bb, mb := bad.NewBatch(), mem.NewBatch()
			both := func(f func(engine.Batch)) { f(bb); f(mb) }
			ord := uint32(0)
			// What this batch changes of the test's bookkeeping, kept only if it commits.
			committedHist, committedFrom := cloneHist(hist), outboxFrom
			newHist := make([][]engine.Position, len(addrs))
			for range rapid.IntRange(0, 8).Draw(rt, "ops") {
				ai := rapid.IntRange(0, len(addrs)-1).Draw(rt, "addr")
				a := addrs[ai]
				switch rapid.IntRange(0, 8).Draw(rt, "op") {
				case 0:
					e := engine.Entity{Version: idx, State: []byte(rapid.StringN(0, 8, -1).Draw(rt, "state"))}
					both(func(b engine.Batch) { b.PutEntity(a, e) })
				case 1:
					ord++
					p := engine.Position{Index: idx, Ordinal: ord}
					kind := engine.HistoryKind(rapid.IntRange(1, 2).Draw(rt, "kind"))
					data := []byte(fmt.Sprint("h", idx, ord))
					both(func(b engine.Batch) { b.AppendHistory(a, p, kind, data) })
					newHist[ai] = append(newHist[ai], p)
				case 2:
					if len(hist[ai]) > 0 { // the oldest, as a bounded audit stream does
						p := hist[ai][0]
						hist[ai] = hist[ai][1:]
						both(func(b engine.Batch) { b.DeleteHistory(a, p) })
					}
				case 3:
					key := fmt.Sprint("k", rapid.IntRange(0, 3).Draw(rt, "key"))
					data := []byte(fmt.Sprint("r", idx))
					both(func(b engine.Batch) { b.PutResult(a, key, data) })
				case 4:
					ord++
					p := engine.Position{Index: idx, Ordinal: ord}
					data := []byte{engine.OutboxEvent, byte(idx), byte(ord)}
					both(func(b engine.Batch) { b.PutOutbox(p, data) })
				case 5:
					// Rows of earlier entries only: what a relay can have published.
					upTo := engine.Position{Index: uint64(rapid.IntRange(0, int(idx)-1).Draw(rt, "upto")), Ordinal: 100}
					if upTo.After(outboxFrom) {
						from := outboxFrom
						both(func(b engine.Batch) { b.DeleteOutbox(from, upTo) })
						outboxFrom = upTo
					}
				case 6:
					tm := engine.Timer{Address: a, Name: names[rapid.IntRange(0, 2).Draw(rt, "name")],
						At: rapid.Int64Range(-2, 8).Draw(rt, "at"), Payload: []byte{byte(idx)}}
					both(func(b engine.Batch) { b.PutTimer(tm) })
				case 7:
					name := names[rapid.IntRange(0, 2).Draw(rt, "name")]
					cur, ok, err := mem.Timer(a, name)
					if err != nil {
						rt.Fatal(err)
					}
					if ok {
						both(func(b engine.Batch) { b.DeleteTimer(cur) })
					}
				case 8:
					m := engine.Meta{Index: idx, At: int64(idx) * 10, Hash: [32]byte{byte(idx)}}
					both(func(b engine.Batch) { b.SetMeta(m) })
				}
			}
			if rapid.IntRange(0, 5).Draw(rt, "discard") == 0 {
				bb.Discard()
				mb.Discard()
				hist, outboxFrom = committedHist, committedFrom
			} else {
				if err := bb.Commit(); err != nil {
					rt.Fatal(err)
				}
				if err := mb.Commit(); err != nil {
					rt.Fatal(err)
				}
				for i := range hist {
					hist[i] = append(hist[i], newHist[i]...)
				}
			}
			compare(rt, idx, bad, mem, addrs, names)
		}
	})
}

func compare(rt *rapid.T, idx uint64, bad *storage.ShardStore, mem *memstore.Store, addrs []actor.Address, names []string) {
	must := func(err error) {
		if err != nil {
			rt.Fatal(err)
		}
	}
	for _, a := range addrs {
		be, err := bad.Entity(a)
		must(err)
		me, err := mem.Entity(a)
		must(err)
		if be.Version != me.Version || !bytes.Equal(be.State, me.State) {
			rt.Fatalf("batch %d %s: entity badger %+v memory %+v", idx, a, be, me)
		}
		for k := range 4 {
			key := fmt.Sprint("k", k)
			br, bok, err := bad.Result(a, key)
			must(err)
			mr, mok, err := mem.Result(a, key)
			must(err)
			if bok != mok || !bytes.Equal(br, mr) {
				rt.Fatalf("batch %d %s %s: result badger %q %v memory %q %v", idx, a, key, br, bok, mr, mok)
			}
		}
		for _, n := range names {
			bt, bok, err := bad.Timer(a, n)
			must(err)
			mt, mok, err := mem.Timer(a, n)
			must(err)
			if bok != mok || bok && !sameTimer(bt, mt) {
				rt.Fatalf("batch %d %s %s: timer badger %+v %v memory %+v %v", idx, a, n, bt, bok, mt, mok)
			}
		}
		for _, rej := range []bool{true, false} {
			bh, _, _, err := bad.History(a, engine.Position{}, 1000, rej)
			must(err)
			mh := mem.History(a, engine.Position{}, 1000, rej)
			if !slices.EqualFunc(bh, mh, func(x storage.HistoryRecord, y memstore.Record) bool {
				return x.Pos == y.Pos && x.Kind == y.Kind && bytes.Equal(x.Data, y.Data)
			}) {
				rt.Fatalf("batch %d %s rejections=%v: history badger %v memory %v", idx, a, rej, bh, mh)
			}
		}
	}
	for _, upTo := range []int64{-10, 0, 3, 7, 100} {
		for _, limit := range []int{1, 2, 100} {
			bt, err := bad.DueTimers(upTo, limit)
			must(err)
			mt, err := mem.DueTimers(upTo, limit)
			must(err)
			if !slices.EqualFunc(bt, mt, sameTimer) {
				rt.Fatalf("batch %d due(%d, %d): badger %+v memory %+v", idx, upTo, limit, bt, mt)
			}
		}
	}
	bo, err := bad.Outbox(engine.Position{}, 1000)
	must(err)
	mo := mem.Outbox()
	if !slices.EqualFunc(bo, mo, func(x storage.OutboxRow, y memstore.OutboxRow) bool {
		return x.Pos == y.Pos && bytes.Equal(x.Data, y.Data)
	}) {
		rt.Fatalf("batch %d outbox: badger %v memory %v", idx, bo, mo)
	}
	bm, err := bad.Meta()
	must(err)
	mm, err := mem.Meta()
	must(err)
	if bm != mm {
		rt.Fatalf("batch %d meta: badger %+v memory %+v", idx, bm, mm)
	}
}

func sameTimer(a, b engine.Timer) bool {
	return a.Address == b.Address && a.Name == b.Name && a.At == b.At && bytes.Equal(a.Payload, b.Payload)
}

func cloneHist(h [][]engine.Position) [][]engine.Position {
	out := make([][]engine.Position, len(h))
	for i := range h {
		out[i] = slices.Clone(h[i])
	}
	return out
}

// TestStore_KeepsCopies: the engine reuses the memory of what it wrote once
// a batch is committed, so the store must keep copies, not the slices.
func TestStore_KeepsCopies(t *testing.T) {
	s := memstore.New()
	a := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "e"}
	pos := engine.Position{Index: 1, Ordinal: 1}
	hist, res, row := []byte("history"), []byte("result"), []byte("Erow")
	b := s.NewBatch()
	b.AppendHistory(a, pos, engine.HistoryEvent, hist)
	b.PutResult(a, "k", res)
	b.PutOutbox(pos, row)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{hist, res, row} {
		for i := range p {
			p[i] = 'X'
		}
	}
	if h := s.History(a, engine.Position{}, 10, true); len(h) != 1 || string(h[0].Data) != "history" {
		t.Fatalf("history %+v", h)
	}
	if r, ok, _ := s.Result(a, "k"); !ok || string(r) != "result" {
		t.Fatalf("result %q", r)
	}
	if o := s.Outbox(); len(o) != 1 || string(o[0].Data) != "Erow" {
		t.Fatalf("outbox %+v", o)
	}
}
