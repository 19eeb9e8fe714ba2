package cluster

import (
	"fmt"
	"sync"

	"github.com/rhizon/rhizon/cluster/membership"
)

// usageCache remembers each local shard's bytes per tenant at the applied
// index it was measured at, so a refresh re-reads only the shards that
// applied something since.
type usageCache struct {
	mu     sync.Mutex
	shards map[uint32]shardUsage
}

type shardUsage struct {
	index uint64
	bytes map[string]int64
}

// TenantBytes reports the bytes each tenant stores in the shard replicas this
// node holds (every shard when the cluster has no more nodes than the
// replication factor). The gateway's storage quota reads it; see
// gateway.Quotas for the bound this gives.
func (n *Node) TenantBytes() (map[string]int64, error) {
	n.usage.mu.Lock()
	defer n.usage.mu.Unlock()
	if n.usage.shards == nil {
		n.usage.shards = map[uint32]shardUsage{}
	}
	out := map[string]int64{}
	seen := map[uint32]bool{}
	for _, s := range n.Shards() {
		seen[s.ID()] = true
		idx := s.Meta().Index
		u, ok := n.usage.shards[s.ID()]
		if !ok || u.index != idx {
			b, err := s.Store().TenantBytes()
			if err != nil {
				return nil, fmt.Errorf("shard %d: %w", s.ID(), err)
			}
			u = shardUsage{index: idx, bytes: b}
			n.usage.shards[s.ID()] = u
		}
		for t, v := range u.bytes { //rhizon:deterministic sums commute
			out[t] += v
		}
	}
	for id := range n.usage.shards { //rhizon:deterministic deletes only
		if !seen[id] {
			delete(n.usage.shards, id)
		}
	}
	return out, nil
}

// LiveNodes is the number of alive members, this node included: the
// gateways that share each quota.
func (n *Node) LiveNodes() int {
	if n.ml == nil {
		return 1
	}
	live := 0
	for _, m := range n.ml.Members() {
		if m.State == membership.MemberAlive {
			live++
		}
	}
	return max(1, live)
}
