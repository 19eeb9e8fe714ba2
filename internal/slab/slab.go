// Package slab hands out byte slices from a few large chunks instead of an
// allocation each: the engine's and the storage batch's bytes of one entry
// (outbox rows, results, keys and values), a thousand or so per entry.
// Whoever resets a Slab guarantees that no slice of it is still referenced.
// It links only the standard library (the engine may import it).
package slab

// Slab is a set of chunks, used from the start and reused after Reset.
type Slab struct {
	chunks [][]byte // every chunk, full ones first; chunks[:n] are in use
	n      int
}

const (
	// Chunk is the size of one chunk.
	Chunk = 32 << 10
	// MaxAlloc is the largest slice carved from a chunk; a larger one is its
	// own allocation, so a big value neither wastes a chunk's tail nor stays
	// in the chunks.
	MaxAlloc = Chunk / 4
	// MaxChunks bounds the chunks a Slab keeps over a Reset, so one huge
	// entry does not pin memory.
	MaxChunks = 16
)

// Make returns a slice of length n and capacity max(n, size): appending
// beyond that moves it rather than overwrite the next slice. Its bytes are
// not zeroed: the caller writes all n of them.
func (s *Slab) Make(n, size int) []byte {
	size = max(n, size)
	if size > MaxAlloc {
		return make([]byte, n, size)
	}
	if s.n == 0 || len(s.chunks[s.n-1])+size > cap(s.chunks[s.n-1]) {
		if s.n == len(s.chunks) {
			s.chunks = append(s.chunks, make([]byte, 0, Chunk))
		}
		s.n++
	}
	c := s.chunks[s.n-1]
	l := len(c)
	s.chunks[s.n-1] = c[:l+size]
	return c[l : l+n : l+size]
}

// InUse is how many chunks hold slices.
func (s *Slab) InUse() int { return s.n }

// Kept is how many chunks the Slab holds, used or not.
func (s *Slab) Kept() int { return len(s.chunks) }

// Reset makes every chunk free again. poison (tests) first overwrites the
// bytes handed out, so a slice kept past its entry reads garbage instead of
// the next entry's data by luck.
func (s *Slab) Reset(poison bool) {
	if len(s.chunks) > MaxChunks {
		clear(s.chunks[MaxChunks:])
		s.chunks = s.chunks[:MaxChunks]
	}
	for i := range s.chunks[:min(s.n, len(s.chunks))] {
		if poison {
			c := s.chunks[i]
			for j := range c {
				c[j] = 0xA5
			}
		}
		s.chunks[i] = s.chunks[i][:0]
	}
	s.n = 0
}
