package storage

// LogStore: one shard's view of a RaftDB, implementing raft.LogStore and
// raft.StableStore.

import (
	"encoding/binary"
	"fmt"

	"github.com/hashicorp/raft"
)

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
