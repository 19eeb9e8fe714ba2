package actor

// FNV-1a, 64 bit (hash/fnv's New64a), computed inline so that mapping an
// address allocates nothing.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// ShardOf maps addr to one of count shards: the 64-bit FNV-1a hash of
// addr.Key() modulo count. The mapping is fixed for the life of a cluster
// (its shard count is chosen at creation and never changes), so it must stay
// byte-for-byte the same; shard.Of uses it on the nodes, and the Go client
// uses it to send a command straight to its shard's leader. count must not
// be 0.
func ShardOf(addr Address, count uint32) uint32 {
	h := uint64(fnvOffset64)
	for _, p := range [...]string{addr.Tenant, addr.Workspace, addr.ActorType, addr.EntityID} {
		// The same bytes as Key: a 2-byte big-endian length, then the part.
		h = (h ^ uint64(byte(len(p)>>8))) * fnvPrime64
		h = (h ^ uint64(byte(len(p)))) * fnvPrime64
		for i := 0; i < len(p); i++ {
			h = (h ^ uint64(p[i])) * fnvPrime64
		}
	}
	return uint32(h % uint64(count))
}
