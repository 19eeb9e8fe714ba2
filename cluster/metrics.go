package cluster

import (
	"context"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// registerMetrics exports gauges read at scrape time: how many replicas this
// node holds and leads (leader spread at a glance) and how many shards are
// not yet where placement wants them (rebalancing in progress).
func (n *Node) registerMetrics() (metric.Registration, error) {
	m := otel.Meter("github.com/rhizon/rhizon/cluster")
	replicas, err := m.Int64ObservableGauge("rhizon.shards.replicas", metric.WithDescription("Shard replicas on this node."))
	if err != nil {
		return nil, err
	}
	leading, err := m.Int64ObservableGauge("rhizon.shards.leading", metric.WithDescription("Shards this node leads."))
	if err != nil {
		return nil, err
	}
	pending, err := m.Int64ObservableGauge("rhizon.rebalancing.pending",
		metric.WithDescription("Shards whose replicas are not yet where placement wants them, as this node sees the map."))
	if err != nil {
		return nil, err
	}
	attrs := metric.WithAttributes(attribute.String("node", n.cfg.NodeID))
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		shards := n.Shards()
		led := 0
		for _, s := range shards {
			if s.IsLeader() {
				led++
			}
		}
		o.ObserveInt64(replicas, int64(len(shards)), attrs)
		o.ObserveInt64(leading, int64(led), attrs)
		if st := n.ClusterState(); st.Initialized() {
			o.ObserveInt64(pending, int64(len(n.rebalancing(st, n.ml.Members()))), attrs)
		}
		return nil
	}, replicas, leading, pending)
}

// forwardStats counts the requests a node sent on to the shard leader on
// another node (one per attempt: a request that chases a moving leader counts
// each hop). In steady state a leader-routing client causes none.
type forwardStats struct {
	total   atomic.Uint64
	attrs   map[string]metric.AddOption // by op: "submit", "read"
	counter metric.Int64Counter
}

// forwardCounters holds each node's forwardStats, by node id and gateway
// address (a process runs one node, tests several). It lives here rather
// than in Node so that metrics stay in this file; an entry is a few words,
// kept for the life of the process, and a node reopened with the same id and
// address continues its count (as the OpenTelemetry counter does).
var forwardCounters sync.Map // forwardKey -> *forwardStats

type forwardKey struct{ id, addr string }

func (n *Node) forwardStats() *forwardStats {
	key := forwardKey{n.cfg.NodeID, n.cfg.GRPCAddr}
	if v, ok := forwardCounters.Load(key); ok {
		return v.(*forwardStats)
	}
	fs := &forwardStats{attrs: map[string]metric.AddOption{}}
	// Exported for Prometheus as rhizon_forwarded_total.
	fs.counter, _ = otel.Meter("github.com/rhizon/rhizon/cluster").Int64Counter("rhizon.forwarded",
		metric.WithDescription("Requests this node's gateway forwarded to the shard leader on another node, by op (submit, read)."))
	for _, op := range []string{"submit", "read"} {
		fs.attrs[op] = metric.WithAttributes(attribute.String("node", n.cfg.NodeID), attribute.String("op", op))
	}
	v, _ := forwardCounters.LoadOrStore(key, fs)
	return v.(*forwardStats)
}

// countForward records one forwarded request of op ("submit" or "read").
func (n *Node) countForward(ctx context.Context, op string) {
	fs := n.forwardStats()
	fs.total.Add(1)
	if fs.counter != nil {
		fs.counter.Add(ctx, 1, fs.attrs[op])
	}
}

// Forwarded reports how many requests this node has forwarded to a shard
// leader on another node since it opened (rhizon_forwarded_total summed over
// ops).
func (n *Node) Forwarded() uint64 { return n.forwardStats().total.Load() }
