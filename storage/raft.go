package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// ErrKeyNotFound is returned by LogStore.Get and GetUint64 for a key never
// set. hashicorp/raft recognises a missing key by err.Error() == "not found"
// (NewRaft, HasExistingState, requestVote in v1.8.0), the text raft-boltdb
// uses; keep it exactly.
var ErrKeyNotFound = errors.New("not found")

// RaftDB is a node's Raft storage: the log and the stable store of every
// shard on the node in one write-ahead log (see wal.go for the format), with
// an index in memory of where each shard's entries are.
//
// Raft acknowledges entries and votes as soon as StoreLogs and Set return,
// so both are fsynced first. Each shard's Raft writes its log one batch at a
// time; writes of all shards therefore go through one committer that appends
// whatever is waiting with one write and one fdatasync: the node pays one
// sync per group, not one per shard. (The log used to live in Badger, whose
// synced commit msyncs its memtable and syncs its value log: 6 ms per commit
// under load against 0.3-0.8 ms for fdatasync of a preallocated file.)
type RaftDB struct {
	dir     string // the segments' directory
	log     *slog.Logger
	segSize int64
	lock    *os.File

	// mu guards the index against the committer, which alone changes it
	// (and alone reads it without mu).
	mu     sync.RWMutex
	closed bool
	shards map[uint32]*shardLog
	segs   []*segment // oldest first; the last one is appended to

	writes chan *logWrite
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	needSpare  chan struct{} // wakes the spare maker
	spareReady atomic.Bool
	spareDone  chan struct{}
	spareAsked bool // committer only: the spare for the next segment is being made
	sparesUsed int  // committer only; for tests

	// Committer only.
	failed error // after a failed write or sync the file's state is unknown: no more writes
	noGC   bool  // a segment could not be removed: removing newer ones would reorder history
	buf    []byte
}

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

// raftMetrics measure the group commit: how long each synced write takes and
// how many StoreLogs calls (and entries) share it. Their rates are the node's
// fsyncs per second, the first thing to look at when throughput disappoints.
var raftMetrics = newRaftLogMetrics()

type raftLogMetrics struct {
	syncDur   metric.Float64Histogram
	groupSize metric.Int64Histogram
	entries   metric.Int64Counter
}

func newRaftLogMetrics() *raftLogMetrics {
	meter := otel.Meter("github.com/rhizon/rhizon/storage")
	m := &raftLogMetrics{}
	m.syncDur, _ = meter.Float64Histogram("rhizon.raftlog.commit.duration", metric.WithUnit("s"),
		metric.WithDescription("Time of one synced Raft log write (all shards' pending entries)."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1))
	m.groupSize, _ = meter.Int64Histogram("rhizon.raftlog.commit.calls",
		metric.WithDescription("StoreLogs calls sharing one synced write."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128))
	m.entries, _ = meter.Int64Counter("rhizon.raftlog.entries", metric.WithDescription("Raft log entries stored."))
	return m
}

func (m *raftLogMetrics) record(start time.Time, calls, entries int) {
	ctx := context.Background()
	m.syncDur.Record(ctx, time.Since(start).Seconds())
	m.groupSize.Record(ctx, int64(calls))
	m.entries.Add(ctx, int64(entries))
}

// logWrite is one record waiting for the group commit.
type logWrite struct {
	typ   byte
	shard uint32
	rec   []byte     // the whole record, header included
	ents  []entryRef // recEntries
	min   uint64     // recDelete
	max   uint64
	key   string // recStable
	val   []byte
	off   int64 // set by the committer: where rec starts in its segment
	err   chan error
}

// entryRef is an entry of a recEntries record: its index and where its
// encoding lies relative to the record.
type entryRef struct {
	index uint64
	off   uint32
	n     uint32
}

// entriesWriter builds a recEntries record.
type entriesWriter struct {
	w     *logWrite
	start int
}

func newEntriesWriter(shard uint32, sizeHint int) entriesWriter {
	w := &logWrite{typ: recEntries, shard: shard}
	b, start := beginRecord(make([]byte, 0, recHeaderLen+4+sizeHint), recEntries)
	w.rec = binary.BigEndian.AppendUint32(b, shard)
	return entriesWriter{w: w, start: start}
}

// add appends entry index, encoded by enc.
func (e entriesWriter) add(index uint64, enc func([]byte) []byte) {
	w := e.w
	w.rec = binary.BigEndian.AppendUint64(w.rec, index)
	w.rec = append(w.rec, 0, 0, 0, 0)
	body := len(w.rec)
	w.rec = enc(w.rec)
	n := len(w.rec) - body
	binary.BigEndian.PutUint32(w.rec[body-4:], uint32(n))
	w.ents = append(w.ents, entryRef{index: index, off: uint32(body), n: uint32(n)})
}

func (e entriesWriter) finish() (*logWrite, error) {
	var err error
	e.w.rec, err = endRecord(e.w.rec, e.start)
	return e.w, err
}

func deleteWrite(shard uint32, min, max uint64) *logWrite {
	b, start := beginRecord(make([]byte, 0, recHeaderLen+20), recDelete)
	b = binary.BigEndian.AppendUint32(b, shard)
	b = binary.BigEndian.AppendUint64(b, min)
	b = binary.BigEndian.AppendUint64(b, max)
	b, _ = endRecord(b, start)
	return &logWrite{typ: recDelete, shard: shard, rec: b, min: min, max: max}
}

func stableWrite(shard uint32, key string, val []byte) (*logWrite, error) {
	b, start := beginRecord(make([]byte, 0, recHeaderLen+8+len(key)+len(val)), recStable)
	b = binary.BigEndian.AppendUint32(b, shard)
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = append(b, val...)
	b, err := endRecord(b, start)
	return &logWrite{typ: recStable, shard: shard, rec: b, key: key, val: slices.Clone(val)}, err
}

// OpenRaft opens or creates the Raft store in dir (its segments are in
// dir/wal). Of opts only Logger matters, and the rest only to open a Raft
// store that an older version kept in Badger in dir: it is copied into the
// log first, then removed.
func OpenRaft(dir string, opts Options) (*RaftDB, error) {
	return openRaft(dir, opts, defaultSegmentSize)
}

func openRaft(dir string, opts Options, segSize int64) (*RaftDB, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: create %s: %w", dir, err)
	}
	walDir := filepath.Join(dir, "wal")
	switch _, err := os.Stat(walDir); {
	case errors.Is(err, fs.ErrNotExist) && hasBadger(dir):
		if err := migrateBadger(dir, walDir, opts, segSize); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(walDir, 0o755); err != nil {
			return nil, fmt.Errorf("storage: create %s: %w", walDir, err)
		}
		if err := fsyncPath(dir); err != nil {
			return nil, fmt.Errorf("storage: create %s: %w", walDir, err)
		}
	case err != nil:
		return nil, fmt.Errorf("storage: open raft log: %w", err)
	}
	if err := removeMigratedBadger(dir, opts); err != nil {
		return nil, fmt.Errorf("storage: remove the migrated Badger raft store: %w", err)
	}
	return openWAL(walDir, opts, segSize)
}

// openWAL opens the log in dir: it replays every segment into the index,
// cuts off a torn tail of the last one and starts the committer.
func openWAL(dir string, opts Options, segSize int64) (*RaftDB, error) {
	lock, err := lockFile(filepath.Join(dir, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("storage: lock raft log %s: %w", dir, err)
	}
	d := &RaftDB{
		dir: dir, log: opts.Logger.With("component", "storage", "db", "raft"), segSize: segSize, lock: lock,
		shards: map[uint32]*shardLog{}, writes: make(chan *logWrite, 1024),
		stop: make(chan struct{}), done: make(chan struct{}),
		needSpare: make(chan struct{}, 1), spareDone: make(chan struct{}),
	}
	if err := d.recover(); err != nil {
		for _, s := range d.segs {
			_ = s.f.Close()
		}
		_ = lock.Close()
		return nil, fmt.Errorf("storage: open raft log %s: %w", dir, err)
	}
	go d.spareLoop()
	go d.commitLoop()
	return d, nil
}

// spareLoop prepares the next segment while the current one fills up.
func (d *RaftDB) spareLoop() {
	defer close(d.spareDone)
	for {
		select {
		case <-d.needSpare:
		case <-d.stop:
			return
		}
		if d.spareReady.Load() {
			continue // not taken yet: never replace a spare the committer may be adopting
		}
		if err := makeSpare(d.dir, d.segSize, d.stop); err != nil {
			if !errors.Is(err, ErrClosed) {
				d.log.Warn("cannot prepare the next raft log segment; it will be allocated when needed", "err", err)
			}
			continue
		}
		d.spareReady.Store(true)
	}
}

// newSegment starts segment seq for a group commit of need bytes: the spare
// if there is one and the group fits, a freshly allocated file otherwise.
func (d *RaftDB) newSegment(seq uint64, need int64) (*segment, error) {
	d.spareAsked = false
	if d.spareReady.Load() && walHeaderLen+need <= d.segSize {
		d.spareReady.Store(false)
		s, err := adoptSpare(d.dir, seq)
		if err == nil {
			d.sparesUsed++
			return s, nil
		}
		if _, serr := os.Stat(filepath.Join(d.dir, segmentName(seq))); serr == nil {
			// Renamed but unusable: the segment number is taken.
			return nil, err
		}
		d.log.Warn("cannot use the prepared raft log segment", "err", err)
	}
	return createSegment(d.dir, seq, d.segSize, need)
}

func (d *RaftDB) recover() error {
	if err := removeSpares(d.dir); err != nil {
		return err
	}
	seqs, err := listSegments(d.dir)
	if err != nil {
		return err
	}
	for i, seq := range seqs {
		last := i == len(seqs)-1
		path := filepath.Join(d.dir, segmentName(seq))
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !checkSegmentHeader(data, seq) {
			if !last {
				return fmt.Errorf("%w: segment %s has a bad header", errCorruptWAL, path)
			}
			// A crash while it was created: its first write (header and
			// records) was never synced, so nothing in it was acknowledged.
			d.log.Warn("removing raft log segment with a torn header", "segment", path)
			if err := os.Remove(path); err != nil {
				return err
			}
			if err := fsyncPath(d.dir); err != nil {
				return err
			}
			break
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		seg := &segment{seq: seq, f: f, path: path, alloc: int64(len(data))}
		d.segs = append(d.segs, seg)
		end, dirty, err := scanRecords(data, func(off int64, typ byte, payload []byte) error {
			return d.replay(seg, off, typ, payload)
		})
		if err != nil {
			return fmt.Errorf("segment %s at %d: %w", path, end, err)
		}
		seg.size = end
		if dirty {
			if !last {
				return fmt.Errorf("%w: segment %s: unreadable record at %d", errCorruptWAL, path, end)
			}
			// A group commit that was cut short: nothing in it was
			// acknowledged (its fdatasync never returned).
			d.log.Warn("truncating the torn tail of the raft log", "segment", path, "offset", end, "bytes", len(data)-int(end))
			if err := seg.truncateTail(end); err != nil {
				return err
			}
		}
		if last && seg.alloc < d.segSize {
			if preallocate(f, 0, d.segSize) == nil {
				seg.alloc = d.segSize
			} else {
				seg.alloc = 0
			}
		}
	}
	if len(d.segs) == 0 {
		var seq uint64 = 1
		if len(seqs) > 0 {
			seq = seqs[len(seqs)-1] // the one with a torn header, removed above
		}
		seg, err := createSegment(d.dir, seq, d.segSize, 0)
		if err != nil {
			return err
		}
		d.segs = append(d.segs, seg)
	}
	return nil
}

// replay applies one record read back from seg at off to the index.
func (d *RaftDB) replay(seg *segment, off int64, typ byte, p []byte) error {
	bad := fmt.Errorf("%w: malformed record of type %d", errCorruptWAL, typ)
	if len(p) < 4 {
		return bad
	}
	sl := d.shardLog(binary.BigEndian.Uint32(p))
	switch typ {
	case recEntries:
		for pos := 4; pos < len(p); {
			if len(p)-pos < entryOverhead {
				return bad
			}
			index := binary.BigEndian.Uint64(p[pos:])
			n := binary.BigEndian.Uint32(p[pos+8:])
			pos += entryOverhead
			if n == 0 || uint64(n) > uint64(len(p)-pos) {
				return bad
			}
			sl.set(index, loc{seg: seg, off: off + int64(pos), n: n})
			pos += int(n)
		}
	case recDelete:
		if len(p) != 20 {
			return bad
		}
		sl.del(binary.BigEndian.Uint64(p[4:]), binary.BigEndian.Uint64(p[12:]))
	case recStable:
		if len(p) < 8 {
			return bad
		}
		kn := binary.BigEndian.Uint32(p[4:])
		if uint64(kn) > uint64(len(p)-8) {
			return bad
		}
		key := string(p[8 : 8+kn])
		sl.setStable(key, stableVal{val: slices.Clone(p[8+kn:]), seg: seg, size: int64(recHeaderLen + len(p))})
	default:
		return fmt.Errorf("%w: unknown record type %d (written by a newer version?)", errCorruptWAL, typ)
	}
	return nil
}

func (d *RaftDB) shardLog(id uint32) *shardLog {
	sl := d.shards[id]
	if sl == nil {
		sl = &shardLog{stable: map[string]stableVal{}}
		d.shards[id] = sl
	}
	return sl
}

// Close stops the committer and closes the segments. Log stores of its
// shards must not be used afterwards.
func (d *RaftDB) Close() error {
	var err error
	d.once.Do(func() {
		close(d.stop)
		<-d.done
		<-d.spareDone
		d.mu.Lock()
		d.closed = true
		segs := d.segs
		d.mu.Unlock()
		for _, s := range segs {
			err = errors.Join(err, s.f.Close())
		}
		err = errors.Join(err, d.lock.Close())
	})
	return err
}

// submit hands w to the committer and waits until it is durable.
func (d *RaftDB) submit(w *logWrite) error {
	w.err = make(chan error, 1)
	select {
	case d.writes <- w:
		select {
		case err := <-w.err:
			return err
		case <-d.done:
			// The committer stopped; it may have answered just before.
			select {
			case err := <-w.err:
				return err
			default:
				return ErrClosed
			}
		}
	case <-d.stop:
		return ErrClosed
	}
}

// commitLoop is the group committer: it takes one waiting write, adds every
// other one already waiting, appends them with one write and one fdatasync
// and answers all of them; then it reclaims segments.
func (d *RaftDB) commitLoop() {
	defer close(d.done)
	var group []*logWrite
	for {
		var w *logWrite
		select {
		case w = <-d.writes:
		case <-d.stop:
			return
		}
		group = append(group[:0], w)
		size := len(w.rec)
	drain:
		for size < maxGroupBytes {
			select {
			case w = <-d.writes:
				group = append(group, w)
				size += len(w.rec)
			default:
				break drain
			}
		}
		err := d.commit(group)
		for _, w := range group {
			w.err <- err
		}
		clear(group)
		d.reclaim()
	}
}

// commit makes group durable, then visible in the index.
func (d *RaftDB) commit(group []*logWrite) error {
	if d.failed != nil {
		return d.failed
	}
	start := time.Now()
	var total int64
	entries := 0
	for _, w := range group {
		total += int64(len(w.rec))
		entries += len(w.ents)
	}
	seg := d.segs[len(d.segs)-1]
	if !seg.room(total) {
		// Everything in seg is synced already: the new segment's first
		// sync covers all that is not.
		ns, err := d.newSegment(seg.seq+1, total)
		if err != nil {
			d.failed = fmt.Errorf("storage: raft log: new segment: %w", err)
			return d.failed
		}
		d.mu.Lock()
		d.segs = append(d.segs, ns)
		d.mu.Unlock()
		seg = ns
	}
	buf := group[0].rec
	if len(group) > 1 {
		buf = d.buf[:0]
		for _, w := range group {
			buf = append(buf, w.rec...)
		}
		if cap(buf) <= maxGroupBytes {
			d.buf = buf
		}
	}
	if _, err := seg.f.WriteAt(buf, seg.size); err != nil {
		d.failed = fmt.Errorf("storage: raft log: write: %w", err)
		return d.failed
	}
	// After a failed fdatasync the kernel may have dropped the dirty pages
	// and will not report it again: the log cannot be trusted any more.
	if err := datasync(seg.f); err != nil {
		d.failed = fmt.Errorf("storage: raft log: sync: %w", err)
		return d.failed
	}
	d.mu.Lock()
	off := seg.size
	for _, w := range group {
		w.off = off
		off += int64(len(w.rec))
		d.apply(seg, w)
	}
	seg.size = off
	d.mu.Unlock()
	raftMetrics.record(start, len(group), entries)
	if !d.spareAsked && seg.alloc > 0 && seg.size > seg.alloc/2 {
		// Made only once the segment is half full, so short-lived stores
		// (tests, a replica moved away) never write one.
		d.spareAsked = true
		select {
		case d.needSpare <- struct{}{}:
		default:
		}
	}
	return nil
}

func (d *RaftDB) apply(seg *segment, w *logWrite) {
	sl := d.shardLog(w.shard)
	switch w.typ {
	case recEntries:
		for _, e := range w.ents {
			sl.set(e.index, loc{seg: seg, off: w.off + int64(e.off), n: e.n})
		}
	case recDelete:
		sl.del(w.min, w.max)
	case recStable:
		sl.setStable(w.key, stableVal{val: w.val, seg: seg, size: int64(len(w.rec))})
	}
}

// reclaim removes the oldest segments once nothing in them is live. When the
// oldest is pinned by a few live records (an idle shard's entries, the
// control group's, stable values: under an eighth of it) or most of the log
// is garbage, it copies its live records to the end of the log first.
// Segments go strictly oldest first: a segment's deletes and overwrites only
// matter to older ones, which are gone by then.
func (d *RaftDB) reclaim() {
	for !d.noGC && d.failed == nil && len(d.segs) > 1 {
		old := d.segs[0]
		if old.refs > 0 {
			var total, live int64
			for _, s := range d.segs {
				total += s.size
				live += s.live
			}
			worth := old.live*8 < old.size || total > 2*live+2*d.segSize
			if !worth || d.copyForward(old) != nil || old.refs > 0 {
				return
			}
		}
		d.mu.Lock()
		d.segs = d.segs[1:]
		d.mu.Unlock()
		if err := removeSegmentFile(d.dir, old); err != nil {
			d.log.Error("cannot remove raft log segment; no longer reclaiming space", "segment", old.path, "err", err)
			d.noGC = true
		}
	}
}

// copyForward appends seg's live entries and stable values again, so that
// seg holds nothing live.
func (d *RaftDB) copyForward(seg *segment) error {
	var group []*logWrite
	for id, sl := range d.shards {
		var ew entriesWriter
		for i, l := range sl.locs {
			if l.seg != seg {
				continue
			}
			if ew.w == nil {
				ew = newEntriesWriter(id, 0)
			}
			var err error
			ew.add(sl.first+uint64(i), func(b []byte) []byte {
				b = slices.Grow(b, int(l.n))
				n := len(b)
				b = b[:n+int(l.n)]
				_, err = seg.f.ReadAt(b[n:], l.off)
				return b
			})
			if err != nil {
				d.log.Error("raft log: read for compaction", "segment", seg.path, "err", err)
				return err
			}
		}
		if ew.w != nil {
			w, err := ew.finish()
			if err != nil {
				return err
			}
			group = append(group, w)
		}
		for k, v := range sl.stable {
			if v.seg == seg {
				w, err := stableWrite(id, k, v.val)
				if err != nil {
					return err
				}
				group = append(group, w)
			}
		}
	}
	if len(group) == 0 {
		return nil
	}
	return d.commit(group)
}

// Shard returns the log and stable store of one shard.
func (d *RaftDB) Shard(id uint32) *LogStore { return &LogStore{d: d, id: id} }

// LogStore is one shard's Raft log and stable store in a RaftDB. It is safe
// for concurrent use, as Raft requires.
type LogStore struct {
	d  *RaftDB
	id uint32
}

var (
	_ raft.LogStore          = (*LogStore)(nil)
	_ raft.StableStore       = (*LogStore)(nil)
	_ raft.MonotonicLogStore = (*LogStore)(nil)
)

// IsMonotonic reports true: after restoring a snapshot Raft then deletes the
// whole log instead of leaving a gap before the next entry, so the store
// never holds entries older than the snapshot next to newer ones.
func (s *LogStore) IsMonotonic() bool { return true }

// FirstIndex returns the first index written; 0 for no entries.
func (s *LogStore) FirstIndex() (uint64, error) {
	return s.bound(func(sl *shardLog) uint64 {
		if len(sl.locs) == 0 {
			return 0
		}
		return sl.first
	})
}

// LastIndex returns the last index written; 0 for no entries.
func (s *LogStore) LastIndex() (uint64, error) {
	return s.bound((*shardLog).last)
}

func (s *LogStore) bound(f func(*shardLog) uint64) (uint64, error) {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	if s.d.closed {
		return 0, ErrClosed
	}
	sl := s.d.shards[s.id]
	if sl == nil {
		return 0, nil
	}
	return f(sl), nil
}

// GetLog reads the entry at index; raft.ErrLogNotFound when there is none.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	d := s.d
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return ErrClosed
	}
	var l loc
	ok := false
	if sl := d.shards[s.id]; sl != nil {
		l, ok = sl.get(index)
	}
	if !ok {
		d.mu.RUnlock()
		return raft.ErrLogNotFound
	}
	// Read under mu: the committer removes a segment only under mu.
	buf := make([]byte, l.n)
	_, err := l.seg.f.ReadAt(buf, l.off)
	d.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("storage: shard %d: read raft log %d: %w", s.id, index, err)
	}
	if err := decodeLog(buf, log); err != nil {
		return fmt.Errorf("shard %d raft log %d: %w", s.id, index, err)
	}
	if log.Index != index {
		return fmt.Errorf("shard %d raft log %d: %w: entry says index %d", s.id, index, errCorruptKey, log.Index)
	}
	return nil
}

// StoreLog stores one entry.
func (s *LogStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs appends entries as one record and returns once it is synced.
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	hint, lo, hi := 0, logs[0].Index, logs[0].Index
	for _, l := range logs {
		hint += entryOverhead + 32 + len(l.Data) + len(l.Extensions)
		lo, hi = min(lo, l.Index), max(hi, l.Index)
	}
	if err := s.checkGap(lo, hi, len(logs)); err != nil {
		return err
	}
	ew := newEntriesWriter(s.id, hint)
	for _, l := range logs {
		ew.add(l.Index, func(b []byte) []byte { return appendLog(b, l) })
	}
	w, err := ew.finish()
	if err == nil {
		err = s.d.submit(w)
	}
	if err != nil {
		return fmt.Errorf("storage: shard %d: store raft logs %d-%d: %w", s.id, logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return nil
}

// checkGap refuses entries that would open a huge hole in the index.
func (s *LogStore) checkGap(lo, hi uint64, n int) error {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	if sl := s.d.shards[s.id]; sl != nil && len(sl.locs) > 0 {
		lo, hi = min(lo, sl.first), max(hi, sl.last())
		n += len(sl.locs)
	}
	if hi-lo >= uint64(n)+maxLogGap {
		return fmt.Errorf("storage: shard %d: raft log entries %d-%d leave a gap of more than %d", s.id, lo, hi, maxLogGap)
	}
	return nil
}

// DeleteRange deletes the entries from min to max inclusive: a prefix when
// Raft compacts, a suffix when it drops a conflicting tail, everything after
// a snapshot restore.
func (s *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	s.d.mu.RLock()
	sl := s.d.shards[s.id]
	none := sl == nil || len(sl.locs) == 0 || max < sl.first || min > sl.last()
	s.d.mu.RUnlock()
	if none {
		return nil
	}
	if err := s.d.submit(deleteWrite(s.id, min, max)); err != nil {
		return fmt.Errorf("storage: shard %d: delete raft logs %d-%d: %w", s.id, min, max, err)
	}
	return nil
}

// Set stores a stable value.
func (s *LogStore) Set(key []byte, val []byte) error {
	w, err := stableWrite(s.id, string(key), val)
	if err == nil {
		err = s.d.submit(w)
	}
	if err != nil {
		return fmt.Errorf("storage: shard %d: set %q: %w", s.id, key, err)
	}
	return nil
}

// Get returns a stable value, or ErrKeyNotFound ("not found").
func (s *LogStore) Get(key []byte) ([]byte, error) {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	if s.d.closed {
		return nil, ErrClosed
	}
	sl := s.d.shards[s.id]
	if sl == nil {
		return nil, ErrKeyNotFound
	}
	v, ok := sl.stable[string(key)]
	if !ok {
		return nil, ErrKeyNotFound
	}
	return append([]byte{}, v.val...), nil
}

// SetUint64 stores a stable uint64 (8 bytes big-endian).
func (s *LogStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a stable uint64, or 0 and ErrKeyNotFound ("not found").
func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("storage: shard %d: stable key %q holds %d bytes, not a uint64", s.id, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Raft log entry encoding, version 1:
//
//	version byte (1) | uvarint index | uvarint term | type byte
//	| varint appended_at (Unix ns; 0 is the zero time)
//	| uvarint len | data | uvarint len | extensions
//	| CRC-32C of everything before (4 bytes big-endian)
//
// The checksum turns a flipped bit on disk into a GetLog error, so a node
// refuses to start from a damaged log instead of serving it.
const logCodecVersion = 1

func encodeLog(l *raft.Log) []byte {
	n := 1 + 3*binary.MaxVarintLen64 + 1 + 2*binary.MaxVarintLen32 + len(l.Data) + len(l.Extensions) + 4
	return appendLog(make([]byte, 0, n), l)
}

// appendLog appends the encoding of l to dst.
func appendLog(dst []byte, l *raft.Log) []byte {
	start := len(dst)
	b := append(dst, logCodecVersion)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

var errBadLog = errors.New("storage: corrupt raft log entry")

// decodeLog decodes v into l; Data and Extensions alias v.
func decodeLog(v []byte, l *raft.Log) error {
	if len(v) < 5 {
		return errBadLog
	}
	body := v[:len(v)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(v[len(v)-4:]) {
		return fmt.Errorf("%w: checksum mismatch", errBadLog)
	}
	if body[0] != logCodecVersion {
		return fmt.Errorf("%w: codec version %d", errBadLog, body[0])
	}
	b := body[1:]
	uvar := func() (uint64, bool) {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return x, true
	}
	bytesField := func() ([]byte, bool) {
		n, ok := uvar()
		if !ok || n > uint64(len(b)) {
			return nil, false
		}
		out := b[:n:n]
		b = b[n:]
		if n == 0 {
			out = nil
		}
		return out, true
	}
	var ok bool
	var out raft.Log
	if out.Index, ok = uvar(); !ok {
		return errBadLog
	}
	if out.Term, ok = uvar(); !ok {
		return errBadLog
	}
	if len(b) < 1 {
		return errBadLog
	}
	out.Type = raft.LogType(b[0])
	b = b[1:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return errBadLog
	}
	b = b[n:]
	if at != 0 {
		out.AppendedAt = time.Unix(0, at).UTC()
	}
	if out.Data, ok = bytesField(); !ok {
		return errBadLog
	}
	if out.Extensions, ok = bytesField(); !ok {
		return errBadLog
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errBadLog, len(b))
	}
	*l = out
	return nil
}
