package storage

// The group committer of a RaftDB: writes of all shards wait in one queue and
// go to the log with one write and one sync; reclaim drops or compacts old
// segments.

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

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
