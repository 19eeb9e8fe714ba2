package engine_test

import (
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
)

// BenchmarkApplyCounter measures the engine alone over real Badger: entries of
// 256 counter commands over 10k entities, each command a fresh idempotency
// key. Run with GOMAXPROCS=1 to match the target:
//
//	GOMAXPROCS=1 go test -run '^$' -bench ApplyCounter -benchtime 200x ./engine/
func BenchmarkApplyCounter(b *testing.B) { benchmarkApplyCounter(b, 256) }

// BenchmarkApplySmallEntries is BenchmarkApplyCounter with 8 commands
// per entry, as a lightly loaded cluster proposes them: it shows the cost of
// an entry itself (its batch, read snapshot, commit and hash).
func BenchmarkApplySmallEntries(b *testing.B) { benchmarkApplyCounter(b, 8) }

func benchmarkApplyCounter(b *testing.B, batch int) {
	r := newReplica(b, builtin.Registry())
	payload := []byte(`{"amount":1}`)
	entries := make([]engine.Entry, b.N)
	n := 0
	for i := range entries {
		e := engine.Entry{Index: uint64(i + 1), At: int64(1000 + i), Commands: make([]actor.Command, batch)}
		for j := range e.Commands {
			n++
			a := addr("counter", fmt.Sprintf("c%d", n%10000))
			e.Commands[j] = actor.Command{ID: fmt.Sprint("c", n), Type: "cmd.counter.add", Address: a,
				Payload: payload, IdempotencyKey: fmt.Sprint("k", n), Security: userA}
		}
		entries[i] = e
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range entries {
		if _, err := r.eng.Apply(&entries[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkApplyKV is BenchmarkApplyCounter for the w1-occ shape: entries of
// 256 cmd.kv.update commands, each replacing a ~200-byte document (as
// bench.Workload.Payload builds them) of one of 10k existing entities.
//
//	GOMAXPROCS=1 go test -run '^$' -bench ApplyKV -benchtime 200x ./engine/
func BenchmarkApplyKV(b *testing.B) {
	r := newReplica(b, builtin.Registry())
	const batch, entities = 256, 10000
	doc := func(seq int) []byte {
		p := fmt.Appendf(nil, `{"doc":{"seq":%d,"pad":"`, seq)
		for len(p) < 200 {
			p = append(p, 'x')
		}
		return append(p, `"}}`...)
	}
	index := uint64(0)
	for i := 0; i < entities; i += batch {
		index++
		e := engine.Entry{Index: index, At: int64(index)}
		for j := i; j < min(i+batch, entities); j++ {
			e.Commands = append(e.Commands, actor.Command{ID: fmt.Sprint("s", j), Type: "cmd.kv.create",
				Address: addr("kv", fmt.Sprintf("k%d", j)), Payload: doc(0), IdempotencyKey: fmt.Sprint("s", j), Security: userA})
		}
		r.apply(e)
	}
	entries := make([]engine.Entry, b.N)
	n := 0
	for i := range entries {
		index++
		e := engine.Entry{Index: index, At: int64(index), Commands: make([]actor.Command, batch)}
		for j := range e.Commands {
			n++
			e.Commands[j] = actor.Command{ID: fmt.Sprint("u", n), Type: "cmd.kv.update", Address: addr("kv", fmt.Sprintf("k%d", n%entities)),
				Payload: doc(n), IdempotencyKey: fmt.Sprint("u", n), Security: userA}
		}
		entries[i] = e
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range entries {
		if _, err := r.eng.Apply(&entries[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "commands/s")
}
