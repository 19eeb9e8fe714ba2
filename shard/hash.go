package shard

import "github.com/rhizon/rhizon/actor"

// Of maps an address to one of count shards: a hash of the whole address, so
// the mapping is fixed for the life of a cluster (the shard count is chosen at
// creation and never changes). The hash itself is actor.ShardOf, which the Go
// client shares to route a command to its shard's leader.
func Of(addr actor.Address, count uint32) uint32 { return actor.ShardOf(addr, count) }
