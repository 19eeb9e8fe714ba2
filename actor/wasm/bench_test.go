package wasm_test

import (
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/actor/wasm"
	"github.com/rhizon/rhizon/engine"
)

// BenchmarkApplyCounter is engine/bench_test.go's BenchmarkApplyCounter
// (entries of 256 counter commands over 10k entities, real Badger) for the
// native counter and the WASM one side by side:
//
//	GOMAXPROCS=1 go test -run '^$' -bench ApplyCounter -benchtime 200x ./actor/wasm/
func BenchmarkApplyCounter(b *testing.B) {
	b.Run("native", func(b *testing.B) { benchmarkApply(b, builtin.Counter(), 256) })
	b.Run("wasm", func(b *testing.B) {
		benchmarkApply(b, load(b, "counter", counterModule(b), wasm.Config{}), 256)
	})
}

// BenchmarkApplySmallEntries is the same with 8 commands per entry, where
// the WASM counter pays its per-entry restore more often.
func BenchmarkApplySmallEntries(b *testing.B) {
	b.Run("native", func(b *testing.B) { benchmarkApply(b, builtin.Counter(), 8) })
	b.Run("wasm", func(b *testing.B) {
		benchmarkApply(b, load(b, "counter", counterModule(b), wasm.Config{}), 8)
	})
}

func benchmarkApply(b *testing.B, counter actor.Behavior, batch int) {
	r := newReplica(b, registry(b, counter), true)
	payload := []byte(`{"amount":1}`)
	entries := make([]engine.Entry, b.N)
	n := 0
	for i := range entries {
		e := engine.Entry{Index: uint64(i + 1), At: int64(1000 + i), Commands: make([]actor.Command, batch)}
		for j := range e.Commands {
			n++
			e.Commands[j] = actor.Command{ID: fmt.Sprint("c", n), Type: "cmd.counter.add", Address: addr("counter", fmt.Sprintf("c%d", n%10000)),
				Payload: payload, IdempotencyKey: fmt.Sprint("k", n), Security: user}
		}
		entries[i] = e
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range entries {
		if res, err := r.eng.Apply(&entries[i]); err != nil {
			b.Fatal(err)
		} else if res.Results[0].Status != actor.StatusAccepted {
			b.Fatalf("%+v", res.Results[0])
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "commands/s")
}

// BenchmarkUpcast is one module upcast of a version-1 event (what History
// and Watch pay per old event of a WASM type with an upcaster): a restore
// from the snapshot and a call.
//
//	go test -run '^$' -bench Upcast ./actor/wasm/
func BenchmarkUpcast(b *testing.B) {
	beh := loadRev(b, "profile", "2", buildModule(b, "./testdata/profile2"))
	ev := actor.Event{Type: "evt.profile.named", Payload: []byte(`{"name":"Ada Lovelace"}`)}
	for b.Loop() {
		if _, err := actor.UpcastEvent(beh, ev); err != nil {
			b.Fatal(err)
		}
	}
}
