package shard_test

import (
	"testing"
	"time"

	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

// BenchmarkLinearizableRead confirms leadership for reads on the leader of
// a 3-replica group (all in this process, real TCP): by the lease or by a
// heartbeat round each. cpu-ns/op is the whole process's (three replicas).
func BenchmarkLinearizableRead(b *testing.B) {
	for _, bc := range []struct {
		name string
		off  bool
		par  int
	}{{"lease/serial", false, 0}, {"round/serial", true, 0}, {"lease/par16", false, 16}, {"round/par16", true, 16}} {
		b.Run(bc.name, func(b *testing.B) {
			g := openGroup(b, func(c *shard.Config) { c.NoLeaseReads = bc.off })
			var l *shard.Shard
			// Three replicas starting together may elect twice.
			testkit.EventuallyNil(b, 20*time.Second, "a first read", func() error {
				l = g.s[g.leader()]
				return l.WaitLinearizable(b.Context())
			})
			l0, r0 := l.ReadCounts()
			c0 := testkit.CPUTime(b)
			b.ResetTimer()
			if bc.par == 0 {
				for range b.N {
					if err := l.WaitLinearizable(b.Context()); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism(bc.par)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := l.WaitLinearizable(b.Context()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.StopTimer()
			b.ReportMetric(float64(testkit.CPUTime(b)-c0)/float64(b.N), "cpu-ns/op")
			lease, round := l.ReadCounts()
			lease, round = lease-l0, round-r0
			b.ReportMetric(float64(lease)/float64(lease+round), "leased-frac")
		})
	}
}
