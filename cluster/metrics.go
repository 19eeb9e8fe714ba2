package cluster

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// registerMetrics exports gauges read at scrape time: how many replicas this
// node holds and leads (leader spread at a glance), how many shards are not
// yet where placement wants them (rebalancing in progress), and the Raft
// heartbeats it coalesced.
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
	beats, err := m.Int64ObservableCounter("rhizon.raft.heartbeats",
		metric.WithDescription("Raft heartbeats this node sent coalesced on its links to peers, all groups together."))
	if err != nil {
		return nil, err
	}
	frames, err := m.Int64ObservableCounter("rhizon.raft.heartbeat.frames",
		metric.WithDescription("Frames those heartbeats travelled in: heartbeats per frame is how much coalescing saved."))
	if err != nil {
		return nil, err
	}
	gossipLog, err := m.Int64ObservableCounter("rhizon.gossip.log_lines",
		metric.WithDescription("Warnings and errors memberlist logged (junk packets on the gossip port among them), kept or suppressed by the log's rate limit."))
	if err != nil {
		return nil, err
	}
	evicted, err := m.Int64ObservableCounter("rhizon.raft.handshakes.evicted",
		metric.WithDescription("Pending Raft handshakes closed to make room for new connections (idle or slow connections)."))
	if err != nil {
		return nil, err
	}
	attrs := metric.WithAttributes(attribute.String("node", n.cfg.NodeID))
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		ms := n.mux.Stats()
		o.ObserveInt64(beats, ms.HeartbeatsCarried, attrs)
		o.ObserveInt64(frames, ms.HeartbeatFrames, attrs)
		o.ObserveInt64(evicted, int64(ms.HandshakesEvicted), attrs)
		if n.ml != nil {
			o.ObserveInt64(gossipLog, int64(n.ml.LogLines()), attrs)
		}
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
			o.ObserveInt64(pending, int64(len(n.rebalancer.rebalancing(st, n.ml.Members()))), attrs)
		}
		return nil
	}, replicas, leading, pending, beats, frames, gossipLog, evicted)
}

// forwardStats counts the requests a node sent on to the shard leader on
// another node (one per attempt: a request that chases a moving leader counts
// each hop). In steady state a leader-routing client causes none.
type forwardStats struct {
	total   atomic.Uint64
	attrs   map[string]metric.AddOption // by op: "submit", "read"
	counter metric.Int64Counter
}

// newForwardStats makes the node's counter, exported for Prometheus as
// rhizon_forwarded_total.
func (n *Node) newForwardStats() (*forwardStats, error) {
	fs := &forwardStats{attrs: map[string]metric.AddOption{}}
	var err error
	fs.counter, err = otel.Meter("github.com/rhizon/rhizon/cluster").Int64Counter("rhizon.forwarded",
		metric.WithDescription("Requests this node's gateway forwarded to the shard leader on another node, by op (submit, read, republish, replay)."))
	if err != nil {
		return nil, err
	}
	// Every op count is called with must be here: a nil option panics in
	// the SDK's Add.
	for _, op := range []string{"submit", "read", "republish", "replay"} {
		fs.attrs[op] = metric.WithAttributes(attribute.String("node", n.cfg.NodeID), attribute.String("op", op))
	}
	return fs, nil
}

// count records one forwarded request of op (one of newForwardStats' ops).
func (fs *forwardStats) count(ctx context.Context, op string) {
	fs.total.Add(1)
	fs.counter.Add(ctx, 1, fs.attrs[op])
}

// Forwarded reports how many requests this node has forwarded to a shard
// leader on another node since it opened (rhizon_forwarded_total summed over
// ops).
func (n *Node) Forwarded() uint64 { return n.router.forwards.total.Load() }
