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
				commitCommands(b, s, index, n, 500, state, event, result)
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "commands/s")
		})
	}
}

// commitCommands commits log entry index of n commands as the engine writes
// accepted ones: each its entity (one of entities), one event and its
// idempotency result; then the entry's meta.
func commitCommands(b *testing.B, s *ShardStore, index uint64, n, entities int, state, event, result []byte) {
	bt := s.NewBatch()
	for c := range n {
		a := addr("tenant", fmt.Sprintf("entity-%d", (int(index)*n+c)%entities))
		bt.PutEntity(a, engine.Entity{Version: index, State: state})
		bt.AppendHistory(a, engine.Position{Index: index, Ordinal: uint32(c + 1)}, engine.HistoryEvent, event)
		bt.PutResult(a, fmt.Sprintf("idem-%d-%d", index, c), result)
	}
	bt.SetMeta(engine.Meta{Index: index})
	if err := bt.Commit(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSnapshotWriteTo measures streaming a whole shard into a Raft
// snapshot, which the shard does every SnapshotThreshold entries: its cost
// grows with everything the shard keeps (history and results), not with
// what changed since the last one.
func BenchmarkSnapshotWriteTo(b *testing.B) {
	for _, commands := range []int{100_000, 400_000} {
		b.Run(fmt.Sprintf("commands=%d", commands), func(b *testing.B) {
			db := openDB(b, b.TempDir())
			s := db.Shard(1)
			state := bytes.Repeat([]byte("s"), 60)
			event := bytes.Repeat([]byte("e"), 300)
			result := bytes.Repeat([]byte("r"), 400)
			const perEntry = 256
			for index := uint64(1); index <= uint64(commands/perEntry); index++ {
				commitCommands(b, s, index, perEntry, 10_000, state, event, result)
			}
			var n int64
			b.ResetTimer()
			for b.Loop() {
				snap, err := s.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				var w countingWriter
				if _, err := snap.WriteTo(&w); err != nil {
					b.Fatal(err)
				}
				snap.Release()
				n = int64(w)
			}
			b.SetBytes(n)
			b.ReportMetric(float64(n)/(1<<20), "MiB/snapshot")
		})
	}
}

type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
