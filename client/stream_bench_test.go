package client

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// BenchmarkSubmitWire compares unary and streamed submits against a real
// in-process node (one node, 8 shards, Raft and Badger), 64 callers at once
// over one connection. cpu-µs/op is the process's CPU (client and node
// together) per Submit; ns/op is wall time per Submit.
//
//	go test -run '^$' -bench BenchmarkSubmitWire -benchtime 20000x ./client/
func BenchmarkSubmitWire(b *testing.B) {
	tc := clustertest.Start(b, clustertest.Options{
		Nodes: 1, Shards: 8,
		Tokens: []gateway.TokenEntry{{
			Token: clusterToken, Principal: gateway.TokenPrincipal{ID: "bench", Type: "service"},
			Scopes: []gateway.TokenScope{{Tenant: "bench", Workspace: "*"}},
		}},
	})
	for _, mode := range []struct {
		name string
		opts []Option
	}{{"unary", []Option{WithUnarySubmits()}}, {"stream", nil}} {
		b.Run(mode.name, func(b *testing.B) {
			c, err := Dial(tc.Addrs()[0], append([]Option{WithToken(clusterToken)}, mode.opts...)...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			submit := func(i int) {
				resp, err := c.Submit(ctx, &pb.SubmitRequest{
					Address: &pb.Address{ActorType: "counter", EntityId: fmt.Sprint("c", i%256)},
					Type:    "cmd.counter.add", Payload: []byte(`{"amount":1}`),
				})
				if err != nil || resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
					b.Fatalf("submit: %v, %v", resp, err)
				}
			}
			for i := range 256 { // warm: connection, stream, entities
				submit(i)
			}
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			var n atomic.Int64
			cpu0 := testkit.CPUTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					submit(int(n.Add(1)))
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((testkit.CPUTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
