package cluster

import (
	"context"

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
