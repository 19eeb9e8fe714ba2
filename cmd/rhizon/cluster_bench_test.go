package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit"
)

// startedCluster starts n nodes (the first three bootstrap) and waits until
// every shard has its replicas.
func startedCluster(t testing.TB, n int, shards string) *testCluster {
	c := newTestCluster(t, n, time.Minute)
	for _, p := range c.nodes {
		p.args = append(p.args, "--shards", shards, "--raft-groups", shards)
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	return c
}

// submitN sends total counter commands from workers goroutines spread over
// the nodes, and returns how long it took and the latencies, sorted.
func submitN(t testing.TB, c *testCluster, workers, total int, entities int) (time.Duration, []time.Duration) {
	clients := make([]*client.Client, len(c.nodes))
	for i, p := range c.nodes {
		clients[i] = c.client(p)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	lats := make([]time.Duration, total)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%len(clients)]
			for {
				i := next.Add(1)
				if i > int64(total) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t0 := time.Now()
				_, err := cl.Submit(ctx, submitReq(fmt.Sprintf("e%d", i%int64(entities)), fmt.Sprintf("b%d", i)))
				lats[i-1] = time.Since(t0)
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	slices.Sort(lats)
	return d, lats
}

// benchSubmit runs b.N commands from workers clients on a started 3-node
// cluster and reports the rate and the latency percentiles.
func benchSubmit(b *testing.B, workers int) {
	c := startedCluster(b, 3, "8")
	b.ResetTimer()
	d, lats := submitN(b, c, workers, b.N, 10000)
	b.ReportMetric(float64(b.N)/d.Seconds(), "commands/s")
	b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "p99_ms")
}

// BenchmarkCluster3Submit64 measures the Submit rate of a 3-node cluster
// (real processes, 8 shards, 3 replicas each) with 64 concurrent clients:
//
//	go test -run '^$' -bench Cluster3Submit64 -benchtime 30000x ./cmd/rhizon/
func BenchmarkCluster3Submit64(b *testing.B) { benchSubmit(b, 64) }

// BenchmarkCluster3Submit128 is the same with 128 clients, the concurrency of
// the w1-command target (15k commands/s, p99 under 30 ms):
//
//	go test -run '^$' -bench Cluster3Submit128 -benchtime 30000x ./cmd/rhizon/
func BenchmarkCluster3Submit128(b *testing.B) { benchSubmit(b, 128) }

// BenchmarkShardMove100k measures how long moving one replica of a shard
// holding 100k events takes: a 4th node joins a 3-node cluster with one
// shard, then a node holding it is drained, so the shard moves to the new
// node (learner, snapshot, log catch-up, promotion, removal).
//
//	go test -run '^$' -bench ShardMove100k -benchtime 1x ./cmd/rhizon/
func BenchmarkShardMove100k(b *testing.B) {
	t := testing.TB(b)
	c := startedCluster(t, 3, "1")
	fill, _ := submitN(t, c, 64, 100_000, 1000)
	b.Logf("wrote 100k events in %v", fill)
	n4 := c.add(false, 3)
	n4.args = append(n4.args, "--shards", "1", "--raft-groups", "1")
	n4.start(t)
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(t, "n4 alive", func() error {
		st, err := c.status(c.nodes[0])
		if err != nil {
			return err
		}
		for _, n := range st.Nodes {
			if n.NodeId == "n4" && n.State == "alive" {
				return nil
			}
		}
		return fmt.Errorf("n4 not alive yet")
	})
	b.ResetTimer()
	start := time.Now()
	drain := exec.Command(binary, "drain", "n1", "--addr", c.nodes[1].grpc, "--token", opsToken)
	if out, err := drain.CombinedOutput(); err != nil {
		b.Fatalf("drain: %v %s", err, out)
	}
	testkit.Poll{Timeout: 10 * time.Minute, Every: 100 * time.Millisecond}.EventuallyNil(t, "drain of n1 done", func() error {
		st, err := c.status(c.nodes[1])
		if err != nil {
			return err
		}
		if len(st.Rebalancing) > 0 {
			return fmt.Errorf("%v", st.Rebalancing)
		}
		for _, s := range st.Shards {
			if s.NodeId == "n4" && s.Role != "" {
				return converged(st, 3)
			}
		}
		return fmt.Errorf("n4 holds no replica yet")
	})
	b.ReportMetric(time.Since(start).Seconds(), "move_s")
}
