package storage

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/engine"
)

// BenchmarkLogStoreStoreLogs measures one synced StoreLogs call of n entries
// (Raft appends up to MaxAppendEntries, 64 by default, at once).
func BenchmarkLogStoreStoreLogs(b *testing.B) {
	for _, n := range []int{1, 64} {
		for _, size := range []int{256, 16 << 10} {
			b.Run(fmt.Sprintf("logs=%d/size=%d", n, size), func(b *testing.B) {
				s := openRaftDB(b, b.TempDir()).Shard(1)
				data := bytes.Repeat([]byte("x"), size)
				logs := make([]*raft.Log, n)
				for i := range logs {
					logs[i] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: data}
				}
				b.SetBytes(int64(n * size))
				b.ResetTimer()
				idx := uint64(0)
				for b.Loop() {
					for _, l := range logs {
						idx++
						l.Index = idx
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "logs/s")
			})
		}
	}
}

// BenchmarkBatchCommit measures one engine entry of n commands, each writing
// what an accepted command writes: the entity, one event, the idempotency
// result; plus the entry's meta.
func BenchmarkBatchCommit(b *testing.B) {
	for _, n := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("commands=%d", n), func(b *testing.B) {
			s := openDB(b, b.TempDir()).Shard(1)
			state := bytes.Repeat([]byte("s"), 200)
			event := bytes.Repeat([]byte("e"), 300)
			result := bytes.Repeat([]byte("r"), 120)
			b.ResetTimer()
			index := uint64(0)
			for b.Loop() {
				index++
				bt := s.NewBatch()
				for c := range n {
					a := addr("tenant", fmt.Sprintf("entity-%d", c%500))
					bt.PutEntity(a, engine.Entity{Version: index, State: state})
					bt.AppendHistory(a, engine.Position{Index: index, Ordinal: uint32(c + 1)}, engine.HistoryEvent, event)
					bt.PutResult(a, fmt.Sprintf("idem-%d-%d", index, c), result)
				}
				bt.SetMeta(engine.Meta{Index: index})
				if err := bt.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "commands/s")
		})
	}
}
