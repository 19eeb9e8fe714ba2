package cluster_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkForwardWire: commands submitted on a node that does not lead
// their shard, forwarded to the leader by the unary Forward or over the
// ForwardStream, 64 callers at once; and, for the cost of the rest, the
// same on the leader itself (no forward). Three real nodes in-process (Raft
// over TCP, Badger on disk, one shard): cpu-µs/op is the process's CPU per
// command, all three nodes together.
//
//	go test -run '^$' -bench ForwardWire -benchtime 20000x ./cluster/
func BenchmarkForwardWire(b *testing.B) {
	tc := clustertest.Start(b, clustertest.Options{Nodes: 3, Shards: 1, ShardTemplate: testShardConfig(),
		Tokens: []gateway.TokenEntry{{Token: tokenA, Principal: gateway.TokenPrincipal{ID: "alice", Type: "user"}, Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}}}}})
	var leader *clustertest.Node
	testkit.EventuallyNil(b, 30*time.Second, "shard leader", func() (err error) {
		leader, err = tc.Leader(0)
		return err
	})
	var other *clustertest.Node
	for _, n := range tc.Nodes {
		if n != leader {
			other = n
		}
	}
	for _, mode := range []struct {
		name  string
		on    *clustertest.Node
		unary bool
	}{{"unary", other, true}, {"stream", other, false}, {"leader", leader, false}} {
		b.Run(mode.name, func(b *testing.B) {
			mode.on.Node.SetUnaryForwards(mode.unary)
			ctx := context.Background()
			var n atomic.Int64
			submit := func() {
				i := n.Add(1)
				cmd := actor.Command{
					Address: actor.Address{Tenant: "a", Workspace: "w", ActorType: "counter", EntityID: fmt.Sprint("c", i%256)},
					Type:    "cmd.counter.add", Payload: []byte(`{"amount":1}`),
					IdempotencyKey: fmt.Sprint(mode.name, i), ID: fmt.Sprint(mode.name, i),
					Security: actor.Security{Principal: actor.Principal{ID: "alice", Type: "user"}, Scopes: []actor.Scope{{Tenant: "a", Workspace: "*"}}},
				}
				if res, err := mode.on.Node.Submit(ctx, cmd); err != nil || res.Status != actor.StatusAccepted {
					b.Fatalf("submit: %v, %v", res, err)
				}
			}
			for range 256 { // warm: connection, stream, entities
				submit()
			}
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			cpu0 := cpuTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					submit()
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
