package engine

// Default bounds of the entity cache of one engine. A node holds one engine
// per shard replica (64 or more), so the defaults stay small; the working set
// of a hot shard still fits.
const (
	DefaultCacheEntries = 16 << 10
	DefaultCacheBytes   = 4 << 20
)

// cacheEntryOverhead approximates what one cached entity costs beyond its key
// and state bytes (the node and its map slot), so the byte bound is honest
// for small states.
const cacheEntryOverhead = 96

// entityCache is a write-through LRU of committed entity records, keyed by
// Address.Key(). It spares the apply path a Badger lookup (memtables, table
// seeks, block decode) per command. It is correct only because the engine is
// the store's only writer: it is filled from committed reads and from the
// writes of committed entries, and dropped whenever the store may hold
// something else (a restore, a failed entry).
//
// The cache owns its state bytes: it stores copies and hands out copies, so
// an actor that mutated the state it was given (against the contract) could
// not make a warm replica differ from a cold one.
//
// Nodes live in one slice and link by index, so a steady cache allocates
// nothing but the key and state copies.
type entityCache struct {
	maxEntries int
	maxBytes   int
	bytes      int
	index      map[string]int32
	nodes      []cacheNode // nodes[0] is the sentinel of the LRU ring
	free       []int32
}

type cacheNode struct {
	key        string
	version    uint64
	state      []byte
	prev, next int32
}

func newEntityCache(maxEntries, maxBytes int) *entityCache {
	c := &entityCache{maxEntries: maxEntries, maxBytes: maxBytes}
	c.reset()
	return c
}

func (c *entityCache) enabled() bool { return c.maxEntries > 0 && c.maxBytes > 0 }

// reset forgets every entry.
func (c *entityCache) reset() {
	c.index = map[string]int32{}
	c.nodes = append(c.nodes[:0], cacheNode{})
	c.free = c.free[:0]
	c.bytes = 0
}

func (c *entityCache) len() int { return len(c.index) }

// get returns a copy of the cached record of key, and key as a string the
// caller may keep (the cache's own, so a hit allocates no key).
func (c *entityCache) get(key []byte) (string, Entity, bool) {
	i, ok := c.index[string(key)]
	if !ok {
		return "", Entity{}, false
	}
	c.unlink(i)
	c.pushFront(i)
	n := &c.nodes[i]
	return n.key, Entity{Version: n.version, State: cloneState(n.state)}, true
}

// put records that key's committed record is (version, state). state must
// be private to the cache from now on (a copy made by the caller).
func (c *entityCache) put(key string, version uint64, state []byte) {
	if !c.enabled() {
		return
	}
	cost := len(key) + len(state) + cacheEntryOverhead
	if i, ok := c.index[key]; ok {
		c.remove(i)
	}
	if cost > c.maxBytes {
		return
	}
	var i int32
	if n := len(c.free); n > 0 {
		i, c.free = c.free[n-1], c.free[:n-1]
	} else {
		c.nodes = append(c.nodes, cacheNode{})
		i = int32(len(c.nodes) - 1)
	}
	c.nodes[i] = cacheNode{key: key, version: version, state: state}
	c.index[key] = i
	c.bytes += cost
	c.pushFront(i)
	for len(c.index) > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.nodes[0].prev) // the least recently used
	}
}

func (c *entityCache) remove(i int32) {
	n := &c.nodes[i]
	c.bytes -= len(n.key) + len(n.state) + cacheEntryOverhead
	delete(c.index, n.key)
	c.unlink(i)
	*n = cacheNode{}
	c.free = append(c.free, i)
}

func (c *entityCache) unlink(i int32) {
	n := &c.nodes[i]
	c.nodes[n.prev].next = n.next
	c.nodes[n.next].prev = n.prev
}

func (c *entityCache) pushFront(i int32) {
	s := &c.nodes[0]
	n := &c.nodes[i]
	n.prev, n.next = 0, s.next
	c.nodes[s.next].prev = i
	s.next = i
}

// cloneState copies state the way the store returns it: nil when empty.
func cloneState(state []byte) []byte {
	if len(state) == 0 {
		return nil
	}
	return append([]byte(nil), state...)
}
