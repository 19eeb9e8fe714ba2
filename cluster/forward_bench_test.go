package cluster_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// BenchmarkForwardWire: commands submitted on a node that does not lead
// their shard, forwarded to the leader by the unary Forward or over the
// ForwardStream, 64 callers at once, each mode twice, alternating, after a
// warm-up. The process drifts as its Badger data grows (compactions), so
// compare each run with its neighbours, not with a run far away. Three real
// nodes in-process (Raft over TCP, Badger on disk, one shard): cpu-µs/op is
// the process's CPU per command, all three nodes together.
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
	var n atomic.Int64
	submit := func(on *clustertest.Node) {
		i := n.Add(1)
		cmd := actor.Command{
			Address: actor.Address{Tenant: "a", Workspace: "w", ActorType: "counter", EntityID: fmt.Sprint("c", i%256)},
			Type:    "cmd.counter.add", Payload: []byte(`{"amount":1}`),
			IdempotencyKey: fmt.Sprint("k", i), ID: fmt.Sprint("k", i),
			Security: actor.Security{Principal: actor.Principal{ID: "alice", Type: "user"}, Scopes: []actor.Scope{{Tenant: "a", Workspace: "*"}}},
		}
		if res, err := on.Node.Submit(context.Background(), cmd); err != nil || res.Status != actor.StatusAccepted {
			b.Fatalf("submit: %v, %v", res, err)
		}
	}
	// Warm the cluster well before measuring (connections, the stream,
	// entities, Badger's memtable): the first mode measured paid for it.
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 100 {
				submit(other)
			}
		})
	}
	wg.Wait()
	// Each mode twice, alternating, so that a drift of the process shows.
	for _, mode := range []struct {
		name  string
		on    *clustertest.Node
		unary bool
	}{{"unary", other, true}, {"stream", other, false}, {"unary-again", other, true}, {"stream-again", other, false}} {
		b.Run(mode.name, func(b *testing.B) {
			mode.on.Node.SetUnaryForwards(mode.unary)
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			cpu0 := testkit.CPUTime(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					submit(mode.on)
				}
			})
			b.StopTimer()
			b.ReportMetric(float64((testkit.CPUTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
