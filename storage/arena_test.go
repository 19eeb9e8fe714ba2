package storage

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// TestBatchArenaReuseKeepsCommittedData commits entries whose keys and values
// live in the batch arena, poisoning each arena as it returns to the pool:
// if Badger (or the batch) still referred to a slice after Commit, the stored
// data would be poison or the next entry's.
func TestBatchArenaReuseKeepsCommittedData(t *testing.T) {
	poisonArena = true
	t.Cleanup(func() { poisonArena = false })
	s := openDB(t, t.TempDir()).Shard(1)
	want := map[string]string{}
	for index := uint64(1); index <= 20; index++ {
		b := s.NewBatch()
		for c := range 64 {
			a := addr("t", fmt.Sprintf("e%d", c))
			state := bytes.Repeat([]byte{byte(index)}, 10+c)
			b.PutEntity(a, engine.Entity{Version: index, State: state})
			ev := fmt.Appendf(nil, "event %d/%d", index, c)
			pos := engine.Position{Index: index, Ordinal: uint32(c + 1)}
			b.AppendHistory(a, pos, engine.HistoryEvent, ev)
			b.PutOutbox(pos, append([]byte{engine.OutboxEvent}, ev...))
			res := fmt.Appendf(nil, "result %d/%d", index, c)
			b.PutResult(a, fmt.Sprint("k", index, "/", c), res)
			want[string(entityKey(1, a.Key())[shardPrefixLen:])] = string(append(u64be(index), state...))
			want[string(historyKey(1, a.Key(), pos)[shardPrefixLen:])] = string(append([]byte{byte(engine.HistoryEvent)}, ev...))
			want[string(resultKey(1, a.Key(), fmt.Sprint("k", index, "/", c))[shardPrefixLen:])] = string(res)
		}
		b.SetMeta(engine.Meta{Index: index})
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
		// The outbox rows of an index are packed into one value.
		rows, err := s.Outbox(engine.Position{Index: index - 1, Ordinal: ^uint32(0)}, 1000)
		if err != nil || len(rows) != 64 {
			t.Fatalf("entry %d: %d outbox rows, %v", index, len(rows), err)
		}
		for c, r := range rows {
			if w := fmt.Sprintf("Eevent %d/%d", index, c); string(r.Data) != w {
				t.Fatalf("outbox row %v = %q, want %q", r.Pos, r.Data, w)
			}
		}
	}
	got := dump(t, s)
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %x = %x, want %x", k, got[k], v)
		}
	}
}

func u64be(v uint64) []byte {
	return []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// TestBatchBuildAllocs bounds the allocations of filling a batch with what
// accepted commands write (entity, history record, result, outbox row):
// the keys and values come from the batch arena, so only a few chunk or
// list allocations are left per entry. It was 5 per command before.
func TestBatchBuildAllocs(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	const n = 256
	addrs := make([]actor.Address, n)
	keys := make([]string, n)
	for i := range addrs {
		addrs[i] = addr("tenant", fmt.Sprintf("entity-%d", i))
		keys[i] = fmt.Sprint("idem-", i)
	}
	state, event, result := bytes.Repeat([]byte("s"), 40), bytes.Repeat([]byte("e"), 300), bytes.Repeat([]byte("r"), 120)
	fill := func() {
		b := s.NewBatch()
		for i, a := range addrs {
			pos := engine.Position{Index: 1, Ordinal: uint32(i + 1)}
			b.PutEntity(a, engine.Entity{Version: 1, State: state})
			b.AppendHistory(a, pos, engine.HistoryEvent, event)
			b.PutResult(a, keys[i], result)
		}
		b.SetMeta(engine.Meta{Index: 1})
		b.Discard()
	}
	fill() // warm the pools
	if got := testing.AllocsPerRun(20, fill); got/n > 0.5 {
		t.Fatalf("filling a batch allocates %.0f times for %d commands (%.2f each), want at most 0.5 each", got, n, got/n)
	}
}

// TestBatchCommitAllocs bounds the allocations of a whole entry's commit,
// Badger's included (about 15 per key it writes, which the batch cannot
// avoid). The batch arena and the pooled Badger entries took it from about
// 46 to 38 per command (42 with only the entries' values from the heap and
// Txn.Set allocating each entry).
func TestBatchCommitAllocs(t *testing.T) {
	s := openDB(t, t.TempDir()).Shard(1)
	const n = 64
	addrs := make([]actor.Address, n)
	for i := range addrs {
		addrs[i] = addr("tenant", fmt.Sprintf("entity-%d", i))
	}
	keys := make([]string, 0, 1<<14)
	state, event, result := bytes.Repeat([]byte("s"), 40), bytes.Repeat([]byte("e"), 300), bytes.Repeat([]byte("r"), 120)
	index := uint64(0)
	for range cap(keys) {
		keys = append(keys, fmt.Sprint("idem-", len(keys)))
	}
	entry := func() {
		index++
		b := s.NewBatch()
		for i, a := range addrs {
			pos := engine.Position{Index: index, Ordinal: uint32(i + 1)}
			b.PutEntity(a, engine.Entity{Version: index, State: state})
			b.AppendHistory(a, pos, engine.HistoryEvent, event)
			b.PutResult(a, keys[(int(index)*n+i)%len(keys)], result)
		}
		b.SetMeta(engine.Meta{Index: index})
		if err := b.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	entry()
	if got := testing.AllocsPerRun(50, entry) / n; got > 40 {
		t.Fatalf("a committed command allocates %.1f times, want at most 40", got)
	}
}
