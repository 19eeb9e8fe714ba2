package storage

// The in-memory index of a RaftDB: where each shard's entries and stable
// values lie in the segments, and how much of each segment is still live.

import (
	"slices"
)

// shardLog is one shard's part of the index.
type shardLog struct {
	first  uint64 // index of locs[0]; meaningless when locs is empty
	locs   []loc  // entry first+i is at locs[i]; a nil seg is a hole
	stable map[string]stableVal
}

// loc is where an entry's encoding lies.
type loc struct {
	seg *segment
	off int64
	n   uint32
}

type stableVal struct {
	val  []byte
	seg  *segment
	size int64
}

// entryOverhead is what an entry costs in a record besides its encoding.
const entryOverhead = 12

// maxLogGap bounds the holes one StoreLogs may open in a shard's index (an
// entry far from the stored ones). Raft never leaves any: it appends after
// the last entry, or after deleting all of them.
const maxLogGap = 1 << 20

// maxGroupBytes bounds one group commit.
const maxGroupBytes = 16 << 20

func (sl *shardLog) last() uint64 {
	if len(sl.locs) == 0 {
		return 0
	}
	return sl.first + uint64(len(sl.locs)) - 1
}

func (sl *shardLog) get(index uint64) (loc, bool) {
	if len(sl.locs) == 0 || index < sl.first || index-sl.first >= uint64(len(sl.locs)) {
		return loc{}, false
	}
	l := sl.locs[index-sl.first]
	return l, l.seg != nil
}

func ref(l loc) {
	l.seg.refs++
	l.seg.live += int64(l.n) + entryOverhead
}

func unref(l loc) {
	if l.seg != nil {
		l.seg.refs--
		l.seg.live -= int64(l.n) + entryOverhead
	}
}

// set stores entry index at l, replacing an entry stored there before; like
// a key-value store it leaves the other entries alone.
func (sl *shardLog) set(index uint64, l loc) {
	ref(l)
	switch {
	case len(sl.locs) == 0:
		sl.first, sl.locs = index, append(sl.locs[:0], l)
	case index < sl.first:
		gap := sl.first - index
		locs := make([]loc, gap+uint64(len(sl.locs)))
		locs[0] = l
		copy(locs[gap:], sl.locs)
		sl.first, sl.locs = index, locs
	case index-sl.first < uint64(len(sl.locs)):
		unref(sl.locs[index-sl.first])
		sl.locs[index-sl.first] = l
	default:
		for sl.first+uint64(len(sl.locs)) < index {
			sl.locs = append(sl.locs, loc{})
		}
		sl.locs = append(sl.locs, l)
	}
}

// del removes the entries from lo to hi inclusive; first and last move to
// the remaining entries.
func (sl *shardLog) del(lo, hi uint64) {
	if len(sl.locs) == 0 {
		return
	}
	lo, hi = max(lo, sl.first), min(hi, sl.last())
	for i := lo; lo <= hi; i++ {
		unref(sl.locs[i-sl.first])
		sl.locs[i-sl.first] = loc{}
		if i == hi {
			break
		}
	}
	start, end := 0, len(sl.locs)
	for start < end && sl.locs[start].seg == nil {
		start++
	}
	for end > start && sl.locs[end-1].seg == nil {
		end--
	}
	if start == end {
		sl.first, sl.locs = 0, nil
		return
	}
	sl.first += uint64(start)
	sl.locs = sl.locs[start:end]
	if cap(sl.locs) > 2*len(sl.locs)+1024 {
		sl.locs = slices.Clone(sl.locs) // compaction moved past most of the array
	}
}

func (sl *shardLog) setStable(key string, v stableVal) {
	if old, ok := sl.stable[key]; ok {
		old.seg.refs--
		old.seg.live -= old.size
	}
	v.seg.refs++
	v.seg.live += v.size
	sl.stable[key] = v
}
