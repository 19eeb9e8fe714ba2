package engine

// arena hands out the byte slices one entry writes (outbox rows, which are
// also the history records' data, and encoded results) from a few large
// chunks instead of an allocation each. The engine resets it once the entry's
// batch is committed or discarded: Batch keeps what it is given only until
// then (see Batch), and the applier's own references (applier.results) die
// with the entry. Nothing handed back to a caller (Applied.Results) points
// into it, and the entity cache never does (putEntity).
type arena struct {
	chunks [][]byte // chunks[:n] are in use; chunks[n-1] is the current one
	n      int
}

const (
	arenaChunk = 32 << 10
	// arenaMaxAlloc is the largest slice carved from a chunk; larger ones are
	// their own allocation.
	arenaMaxAlloc = arenaChunk / 4
	// arenaMaxChunks bounds what an idle engine keeps.
	arenaMaxChunks = 16
)

// make returns a slice of length n and capacity max(n, size): appending
// beyond that moves it rather than overwrite the next slice.
func (a *arena) make(n, size int) []byte {
	size = max(n, size)
	if size > arenaMaxAlloc {
		return make([]byte, n, size)
	}
	if a.n == 0 || len(a.chunks[a.n-1])+size > cap(a.chunks[a.n-1]) {
		if a.n == len(a.chunks) {
			a.chunks = append(a.chunks, make([]byte, 0, arenaChunk))
		}
		a.n++
	}
	c := a.chunks[a.n-1]
	l := len(c)
	a.chunks[a.n-1] = c[:l+size]
	return c[l : l+n : l+size]
}

// reset frees every chunk for the next entry.
func (a *arena) reset() {
	if len(a.chunks) > arenaMaxChunks {
		clear(a.chunks[arenaMaxChunks:])
		a.chunks = a.chunks[:arenaMaxChunks]
	}
	for i := range a.chunks[:min(a.n, len(a.chunks))] {
		a.chunks[i] = a.chunks[i][:0]
	}
	a.n = 0
}
