package cluster_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
)

// BenchmarkSubmit64Clients measures the end-to-end Submit rate of one node
// (8 shards, one replica each, fsynced Raft log) through real gRPC with 64
// concurrent clients, each writing its own counters. Run:
//
//	go test -run '^$' -bench Submit64 -benchtime 20000x ./cluster/
func BenchmarkSubmit64Clients(b *testing.B) {
	tn := startNode(b, b.TempDir(), 8)
	const clients = 64
	conns := make([]*client.Client, 8)
	for i := range conns {
		conns[i] = tn.client(b, tokenA)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w%len(conns)]
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				req := submit("counter", fmt.Sprintf("c%d", n%1000), "add", fmt.Sprintf("b%d", n), `{"amount":1}`)
				resp, err := c.Submit(ctx(b), req)
				if err != nil {
					b.Error(err)
					return
				}
				if resp.Result.Status != pb.Status_STATUS_ACCEPTED {
					b.Errorf("rejected: %+v", resp.Result)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}
