package shard

import (
	"hash/fnv"

	"github.com/rhizon/rhizon/actor"
)

// Of maps an address to one of count shards: a hash of the whole address, so
// the mapping is fixed for the life of a cluster (the shard count is chosen at
// creation and never changes).
func Of(addr actor.Address, count uint32) uint32 {
	h := fnv.New64a()
	h.Write(addr.Key())
	return uint32(h.Sum64() % uint64(count))
}
