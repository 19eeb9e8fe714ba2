package shard

import "github.com/rhizon/rhizon/actor"

// Of maps an address to one of count shards: a hash of the whole address, so
// the mapping is fixed for the life of a cluster (the shard count is chosen at
// creation and never changes). The hash itself is actor.ShardOf, which the Go
// client shares to route a command to its shard's leader.
func Of(addr actor.Address, count uint32) uint32 { return actor.ShardOf(addr, count) }

// GroupOf is the Raft group that carries shard in a cluster of groups
// groups (fixed at creation, like the shard count). A group is one Raft log,
// engine and store; it carries every shard congruent to its id, so with as
// many groups as shards each shard is its own group, as before groups
// existed. Fewer groups than shards make fuller log entries: Raft's and the
// store's costs follow entries, not commands.
func GroupOf(shard, groups uint32) uint32 {
	if groups == 0 {
		return shard
	}
	return shard % groups
}

// Members is the shards group carries, ascending.
func Members(group, shards, groups uint32) []uint32 {
	if groups == 0 || groups >= shards {
		return []uint32{group}
	}
	var out []uint32
	for s := group; s < shards; s += groups {
		out = append(out, s)
	}
	return out
}
