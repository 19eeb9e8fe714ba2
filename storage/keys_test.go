package storage

import (
	"bytes"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// The keys built straight from an Address must be the bytes of the keys built
// from Address.Key(): they are on disk.
func TestAddrPrefixMatchesAddressKey(t *testing.T) {
	part := func(t *rapid.T, name string) string {
		return rapid.OneOf(rapid.StringMatching(`[a-z0-9]{0,12}`), rapid.Just(strings.Repeat("x", 300))).Draw(t, name)
	}
	rapid.Check(t, func(t *rapid.T) {
		a := actor.Address{Tenant: part(t, "t"), Workspace: part(t, "w"), ActorType: part(t, "a"), EntityID: part(t, "e")}
		shard := rapid.Uint32().Draw(t, "shard")
		key := rapid.StringMatching(`[a-z0-9/]{0,20}`).Draw(t, "key")
		pos := engine.Position{Index: rapid.Uint64().Draw(t, "index"), Ordinal: rapid.Uint32().Draw(t, "ordinal")}
		if got, want := addrKeyLen(a), len(a.Key()); got != want {
			t.Fatalf("addrKeyLen = %d, len(Key) = %d", got, want)
		}
		for _, c := range []struct{ name, got, want []byte }{
			{[]byte("entity"), addrPrefix(shard, tagEntity, a, 0), entityKey(shard, a.Key())},
			{[]byte("result"), append(addrPrefix(shard, tagResult, a, len(key)), key...), resultKey(shard, a.Key(), key)},
			{[]byte("history"), appendPos(addrPrefix(shard, tagHistory, a, 12), pos), historyKey(shard, a.Key(), pos)},
			{[]byte("entity (scratch)"), appendAddrKey(appendTagPrefix([]byte("junk")[:0], shard, tagEntity), a), entityKey(shard, a.Key())},
		} {
			if !bytes.Equal(c.got, c.want) {
				t.Fatalf("%s key %x, want %x", c.name, c.got, c.want)
			}
		}
	})
}
