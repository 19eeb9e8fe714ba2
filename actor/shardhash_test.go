package actor_test

import (
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

// keyHash is the mapping as shard.Of computed it before ShardOf existed:
// hash/fnv's 64-bit FNV-1a over Address.Key.
func keyHash(a actor.Address, count uint32) uint32 {
	h := fnv.New64a()
	h.Write(a.Key())
	return uint32(h.Sum64() % uint64(count))
}

func TestShardOf_PinnedValues(t *testing.T) {
	// Computed with shard.Of before the hash moved here: a changed value
	// would send every existing entity to another shard.
	for _, c := range []struct {
		addr           actor.Address
		s8, s64, s4096 uint32
	}{
		{actor.Address{Tenant: "bench", Workspace: "default", ActorType: "counter", EntityID: "e0"}, 2, 58, 3578},
		{actor.Address{Tenant: "bench", Workspace: "default", ActorType: "kv", EntityID: "w1-000042"}, 7, 31, 3551},
		{actor.Address{Tenant: "a", Workspace: "main", ActorType: "counter", EntityID: "c1"}, 5, 61, 1149},
		{actor.Address{Tenant: "t", Workspace: "default", ActorType: "lock", EntityID: "x"}, 4, 28, 1756},
		{actor.Address{Tenant: strings.Repeat("t", 300), Workspace: "w", ActorType: "kv", EntityID: strings.Repeat("e", 70000)}, 6, 6, 3206},
		{actor.Address{}, 5, 5, 2501},
	} {
		for _, w := range []struct{ count, want uint32 }{{8, c.s8}, {64, c.s64}, {4096, c.s4096}} {
			if got := actor.ShardOf(c.addr, w.count); got != w.want {
				t.Errorf("ShardOf(%.40s, %d) = %d, want %d", c.addr.String(), w.count, got, w.want)
			}
		}
	}
}

func TestShardOf_SameAsFNVOverKey(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	part := func() string {
		n := r.IntN(40)
		if r.IntN(50) == 0 {
			n = 200 + r.IntN(70000) // lengths over one byte and over 16 bits
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	for range 5000 {
		a := actor.Address{Tenant: part(), Workspace: part(), ActorType: part(), EntityID: part()}
		count := uint32(1 + r.IntN(actorMaxShards))
		if got, want := actor.ShardOf(a, count), keyHash(a, count); got != want {
			t.Fatalf("ShardOf(%q, %d) = %d, FNV-1a of Key says %d", a.String(), count, got, want)
		}
	}
}

// actorMaxShards is cluster.MaxShards (actor may not import cluster).
const actorMaxShards = 4096

func TestShardOf_DoesNotAllocate(t *testing.T) {
	a := actor.Address{Tenant: "bench", Workspace: "default", ActorType: "counter", EntityID: "e0"}
	var sink uint32
	if n := testing.AllocsPerRun(100, func() { sink += actor.ShardOf(a, 64) }); n != 0 {
		t.Fatalf("ShardOf allocates %v times", n)
	}
	_ = sink
}
