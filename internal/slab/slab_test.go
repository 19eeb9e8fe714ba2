package slab

import "testing"

// TestSlicesDoNotOverlap: a slice carved from a chunk cannot grow into the
// next one, a large one is not carved at all, and Reset keeps the chunks.
func TestSlicesDoNotOverlap(t *testing.T) {
	var s Slab
	x := s.Make(3, 0)
	y := s.Make(2, 8)
	copy(x, "xxx")
	copy(y, "yy")
	x = append(x, 'X') // over capacity: must move, not write into y
	y = append(y, "YYYYYY"...)
	z := s.Make(4, 0)
	copy(z, "zzzz")
	if string(x) != "xxxX" || string(y) != "yyYYYYYY" || string(z) != "zzzz" {
		t.Fatalf("x %q y %q z %q", x, y, z)
	}
	if big := s.Make(MaxAlloc+1, 0); s.n != 1 || len(s.chunks[0]) != 3+8+4 || len(big) != MaxAlloc+1 {
		t.Fatalf("large slice taken from the slab: %d chunks, %d bytes used", s.n, len(s.chunks[0]))
	}
	for range 3 * Chunk / MaxAlloc {
		s.Make(MaxAlloc, 0)
	}
	if s.InUse() != 4 {
		t.Fatalf("%d chunks in use, want 4", s.InUse())
	}
	s.Reset(true)
	if s.InUse() != 0 || s.Kept() != 4 || len(s.chunks[0]) != 0 || s.chunks[0][:1:1][0] != 0xA5 {
		t.Fatalf("after reset: %d in use, %d kept, first holds %d", s.InUse(), s.Kept(), len(s.chunks[0]))
	}
	for range (MaxChunks + 4) * Chunk / MaxAlloc {
		s.Make(MaxAlloc, 0)
	}
	s.Reset(false)
	if s.Kept() != MaxChunks {
		t.Fatalf("%d chunks kept after a huge entry, want at most %d", s.Kept(), MaxChunks)
	}
}
