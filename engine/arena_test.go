package engine_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/engine/memstore"
)

// counterEntry is an entry of n counter commands, each a new submission.
func counterEntry(index uint64, n, entities int) engine.Entry {
	e := engine.Entry{Index: index, At: int64(1000 + index), Commands: make([]actor.Command, n)}
	for j := range e.Commands {
		k := int(index)*n + j
		e.Commands[j] = actor.Command{ID: fmt.Sprint("c", k), Type: "cmd.counter.add", Address: addr("counter", fmt.Sprint("c", k%entities)),
			Payload: []byte(`{"amount":1}`), IdempotencyKey: fmt.Sprint("k", k), Security: userA}
	}
	return e
}

// TestApplyAllocsPerCommand bounds the allocations of applying an entry of
// counter commands over Badger, the store's and Badger's own included. The
// entry arena, the batch arena and the pooled Badger entries took it from
// about 63 to 52 per command (with the tests' small memtables).
func TestApplyAllocsPerCommand(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	const n = 256
	const runs = 20
	entries := make([]engine.Entry, runs+2)
	for i := range entries {
		entries[i] = counterEntry(uint64(i+1), n, 10000)
	}
	next := 0
	apply := func() {
		if _, err := r.eng.Apply(&entries[next]); err != nil {
			t.Fatal(err)
		}
		next++
	}
	apply() // warm the pools
	if got := testing.AllocsPerRun(runs, apply) / n; got > 56 {
		t.Fatalf("applying a command allocates %.1f times, want at most 56", got)
	}
}

// TestEntryArenaReuseKeepsStoredBytes applies entries whose rows and results
// the engine builds in memory it reuses for the next entry, over memstore
// (replay's store, which keeps what it is given) and Badger: what an entry
// stored must not change when later entries are applied.
func TestEntryArenaReuseKeepsStoredBytes(t *testing.T) {
	mem := newMemReplica(t, builtin.Registry())
	disk := newReplica(t, builtin.Registry())
	a := addr("counter", "c0")
	var firstHist, firstOutbox [][]byte
	var firstResults []actor.Result
	var firstEncoded [][]byte
	for i := uint64(1); i <= 5; i++ {
		ent := counterEntry(i, 64, 4)
		// A repeat of an earlier command of the entry answers from the
		// result that entry encoded in its arena.
		ent.Commands = append(ent.Commands, ent.Commands[0])
		rs := mem.apply(ent)
		if d := disk.apply(ent); !slices.EqualFunc(encodeResults(t, rs), encodeResults(t, d), bytes.Equal) {
			t.Fatalf("entry %d: memstore and Badger results differ", i)
		}
		if !rs[len(rs)-1].Replay {
			t.Fatalf("entry %d: the repeated command was not answered as a replay: %+v", i, rs[len(rs)-1])
		}
		if i == 1 {
			for _, h := range mem.mem.History(a, engine.Position{}, 1000, true) {
				firstHist = append(firstHist, bytes.Clone(h.Data))
			}
			for _, o := range mem.mem.Outbox() {
				firstOutbox = append(firstOutbox, bytes.Clone(o.Data))
			}
			firstResults, firstEncoded = rs, encodeResults(t, rs)
		}
	}
	hist := mem.mem.History(a, engine.Position{}, 1000, true)
	for i, want := range firstHist {
		if !bytes.Equal(hist[i].Data, want) {
			t.Fatalf("history record %v changed after later entries:\n%x\nwas\n%x", hist[i].Pos, hist[i].Data, want)
		}
	}
	var outbox []memstore.OutboxRow
	for _, o := range mem.mem.Outbox() {
		if o.Pos.Index == 1 {
			outbox = append(outbox, o)
		}
	}
	if len(outbox) != len(firstOutbox) {
		t.Fatalf("%d outbox rows of entry 1, want %d", len(outbox), len(firstOutbox))
	}
	for i, want := range firstOutbox {
		if !bytes.Equal(outbox[i].Data, want) {
			t.Fatalf("outbox row %v changed after later entries", outbox[i].Pos)
		}
	}
	// The results handed back (the replay's decoded from the arena) share
	// nothing with it either.
	if got := encodeResults(t, firstResults); !slices.EqualFunc(got, firstEncoded, bytes.Equal) {
		t.Fatal("entry 1's results changed after later entries")
	}
}
