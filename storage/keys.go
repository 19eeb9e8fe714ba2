package storage

import (
	"encoding/binary"
	"errors"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// Keyspace tags of the state DB. They follow the 4-byte shard id in every key
// and are stored on disk: never renumber them.
const (
	tagMeta     byte = 0x01 // shard | tag -> index u64 | at i64 | hash [32]
	tagEntity   byte = 0x02 // shard | tag | addrKey -> version u64 | state
	tagHistory  byte = 0x03 // shard | tag | addrKey | index u64 | ordinal u32 -> kind | data (resultref.go)
	tagResult   byte = 0x04 // shard | tag | addrKey | idempotency key -> result (resultref.go)
	tagTimerDue byte = 0x05 // shard | tag | flip(at) u64 | addrKey | name -> payload
	tagTimerEnt byte = 0x06 // shard | tag | addrKey | name -> at i64 | payload
	tagOutbox   byte = 0x07 // shard | tag | index u64 | ordinal u32 -> row, or rows packed up to it (outbox.go)
	tagIndex    byte = 0x08 // shard | tag | actor.AppendIndexKey -> empty (docindex.go)
	tagTrim     byte = 0x09 // shard | tag | addrKey -> index u64 | ordinal u32: last history position a sweep deleted

	// Internal keyspaces: never part of a snapshot.
	tagJournal       byte = 0xF0 // shard | tag | seq u32 -> one op of a large batch
	tagJournalCommit byte = 0xF1 // shard | tag -> op count: the large batch is committed
	tagRestoring     byte = 0xF2 // shard | tag -> present while Restore replaces the shard
)

// dataTag reports whether tag is a keyspace that snapshots carry.
func dataTag(tag byte) bool { return tag >= tagMeta && tag <= tagTrim }

// Keyspace tags of the Raft DB.
const (
	tagRaftLog    byte = 0x01 // shard | tag | index u64 -> encoded raft.Log
	tagRaftStable byte = 0x02 // shard | tag | key -> value
)

// shardPrefixLen is the length of the shard id that starts every key.
const shardPrefixLen = 4

// errCorruptKey reports a key that does not parse; it means on-disk corruption
// or a bug, never bad user input.
var errCorruptKey = errors.New("storage: corrupt key")

// keyBuf starts a key: shard id big-endian, then tag, with room for n more bytes.
func keyBuf(shard uint32, tag byte, n int) []byte {
	b := make([]byte, 5, 5+n)
	binary.BigEndian.PutUint32(b, shard)
	b[4] = tag
	return b
}

// shardPrefix is the 4-byte prefix of every key of shard.
func shardPrefix(shard uint32) []byte { return binary.BigEndian.AppendUint32(nil, shard) }

// tagPrefix is the prefix of a whole keyspace of shard.
func tagPrefix(shard uint32, tag byte) []byte { return keyBuf(shard, tag, 0) }

// appendTagPrefix appends tagPrefix(shard, tag) to b.
func appendTagPrefix(b []byte, shard uint32, tag byte) []byte {
	return append(binary.BigEndian.AppendUint32(b, shard), tag)
}

// flipSign maps int64 to uint64 so that the big-endian bytes sort in numeric
// order: negative times sort before zero, zero before positive.
func flipSign(v int64) uint64 { return uint64(v) ^ (1 << 63) }

func unflipSign(v uint64) int64 { return int64(v ^ (1 << 63)) }

func appendPos(b []byte, p engine.Position) []byte {
	b = binary.BigEndian.AppendUint64(b, p.Index)
	return binary.BigEndian.AppendUint32(b, p.Ordinal)
}

func parsePos(b []byte) (engine.Position, bool) {
	if len(b) != 12 {
		return engine.Position{}, false
	}
	return engine.Position{Index: binary.BigEndian.Uint64(b), Ordinal: binary.BigEndian.Uint32(b[8:])}, true
}

func metaKey(shard uint32) []byte { return keyBuf(shard, tagMeta, 0) }

// addrKeyLen is len(a.Key()).
func addrKeyLen(a actor.Address) int {
	return 8 + len(a.Tenant) + len(a.Workspace) + len(a.ActorType) + len(a.EntityID)
}

// appendAddrKey appends the bytes of a.Key() to b, sparing the engine's hot
// paths the separate allocation of Key's result.
func appendAddrKey(b []byte, a actor.Address) []byte {
	for _, p := range [...]string{a.Tenant, a.Workspace, a.ActorType, a.EntityID} {
		b = append(b, byte(len(p)>>8), byte(len(p)))
		b = append(b, p...)
	}
	return b
}

// addrPrefix is shard | tag | a.Key(), with room for extra more bytes.
func addrPrefix(shard uint32, tag byte, a actor.Address, extra int) []byte {
	return appendAddrKey(keyBuf(shard, tag, addrKeyLen(a)+extra), a)
}

func entityKey(shard uint32, addr []byte) []byte {
	return append(keyBuf(shard, tagEntity, len(addr)), addr...)
}

// historyPrefix is the prefix of one entity's history. Address.Key() is
// self-delimiting (every part is length-prefixed), so no entity's prefix is a
// prefix of another's.
func historyPrefix(shard uint32, addr []byte) []byte {
	return append(keyBuf(shard, tagHistory, len(addr)+12), addr...)
}

func historyKey(shard uint32, addr []byte, p engine.Position) []byte {
	return appendPos(historyPrefix(shard, addr), p)
}

// resultKey places the idempotency key after the self-delimiting address key,
// so the pair is unambiguous without a second length prefix and every key of
// one address shares one prefix.
func resultKey(shard uint32, addr []byte, key string) []byte {
	b := append(keyBuf(shard, tagResult, len(addr)+len(key)), addr...)
	return append(b, key...)
}

// timerDueKey orders timers by (at, address key bytes, name bytes): at is
// fixed-width, the address key is prefix-free, and the name comes last.
func timerDueKey(shard uint32, at int64, addr []byte, name string) []byte {
	b := binary.BigEndian.AppendUint64(keyBuf(shard, tagTimerDue, 8+len(addr)+len(name)), flipSign(at))
	b = append(b, addr...)
	return append(b, name...)
}

func timerEntKey(shard uint32, addr []byte, name string) []byte {
	b := append(keyBuf(shard, tagTimerEnt, len(addr)+len(name)), addr...)
	return append(b, name...)
}

func outboxKey(shard uint32, p engine.Position) []byte {
	return appendPos(keyBuf(shard, tagOutbox, 12), p)
}

// parseAddress decodes an Address.Key() at the start of b and returns the
// rest of b after it.
func parseAddress(b []byte) (actor.Address, []byte, bool) {
	var parts [4]string
	for i := range parts {
		if len(b) < 2 {
			return actor.Address{}, nil, false
		}
		n := int(b[0])<<8 | int(b[1])
		if len(b) < 2+n {
			return actor.Address{}, nil, false
		}
		parts[i] = string(b[2 : 2+n])
		b = b[2+n:]
	}
	return actor.Address{Tenant: parts[0], Workspace: parts[1], ActorType: parts[2], EntityID: parts[3]}, b, true
}

// prefixEnd returns the smallest key greater than every key with prefix p, or
// nil when there is none (p is all 0xFF).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
