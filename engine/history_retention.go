package engine

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
)

// History retention. History records (events and recorded rejections) are
// fed to the state hash, so deleting them is a log entry (Entry.HistorySweep),
// one atomic batch alike on every replica, and a replay re-applies it. A
// record is deleted when its tenant has a window in the entry, the logical
// time it was written at is at least that window before the entry's, and its
// position is at or below the sweep's Through: a log index the leader had
// snapshotted, so the records a new replica gets from the log are never
// trimmed before some snapshot holds them. Each address whose records a
// sweep deletes gets a trim mark (the last deleted position), which History
// reports, so a trimmed history never silently starts later.

// HistorySweep asks an entry to delete old history records among the next
// Limit rows of the shard's history keyspace from From on (an address key,
// index and ordinal; empty for the start), none after log index Through.
type HistorySweep struct {
	From    []byte
	Limit   int
	Through uint64
}

// HistoryRow is one stored history record.
type HistoryRow struct {
	Address actor.Address
	Pos     Position
	Kind    HistoryKind
	Data    []byte
}

// HistorySweeper is the optional Store capability history sweeps need. A
// store without it makes them no-ops (alike on every replica).
type HistorySweeper interface {
	// ScanHistory returns up to limit history rows in key order whose key
	// (after the shard prefix and tag) is at or after from.
	ScanHistory(from []byte, limit int) ([]HistoryRow, error)
	// HistoryTrimmed returns the entity's trim mark: the last position a
	// history sweep deleted (zero when none was).
	HistoryTrimmed(addr actor.Address) (Position, error)
}

// HistoryTrimmer is the Batch capability a history sweep writes its trim
// marks with.
type HistoryTrimmer interface {
	PutHistoryTrim(addr actor.Address, pos Position)
}

// HistoryRecordAt returns the logical time a history record was written at
// (0 when it carries none).
func HistoryRecordAt(kind HistoryKind, data []byte) (int64, error) {
	switch kind {
	case HistoryEvent:
		var ev recordv1.Event
		if err := proto.Unmarshal(data, &ev); err != nil {
			return 0, err
		}
		return ev.At, nil
	case HistoryRejection:
		var rj recordv1.Rejection
		if err := proto.Unmarshal(data, &rj); err != nil {
			return 0, err
		}
		return rj.At, nil
	}
	return 0, nil
}

// HistoryExpired reports whether a record written at recAt at position pos
// may be deleted by a sweep at logical time at with window w (ms) and bound
// through. Shared by the engine and the leader's proposer.
func HistoryExpired(pos Position, recAt, at, w int64, through uint64) bool {
	return w > 0 && recAt != 0 && pos.Index <= through && at-recAt >= w
}

// sweepHistory deletes the old history records among the rows the entry
// names and moves the trim marks of their addresses.
func (a *applier) sweepHistory(sw *HistorySweep) (int, error) {
	if sw == nil || len(a.histRet) == 0 || sw.Through == 0 {
		return 0, nil
	}
	sc, ok := a.e.store.(HistorySweeper)
	tr, ok2 := a.b.(HistoryTrimmer)
	if !ok || !ok2 {
		return 0, nil
	}
	limit := min(max(sw.Limit, 1), MaxSweepRows)
	rows, err := sc.ScanHistory(sw.From, limit)
	if err != nil {
		return 0, fmt.Errorf("%w: scan history: %w", ErrStore, err)
	}
	n := 0
	var cur actor.Address
	var curKey []byte
	var last Position
	flush := func() error {
		if curKey == nil {
			return nil
		}
		old, err := sc.HistoryTrimmed(cur)
		if err != nil {
			return fmt.Errorf("%w: read trim mark: %w", ErrStore, err)
		}
		if last.After(old) {
			tr.PutHistoryTrim(cur, last)
			a.hash('Y', curKey, u64(last.Index), u64(uint64(last.Ordinal)))
		}
		curKey = nil
		return nil
	}
	for _, r := range rows {
		w := a.histRet[r.Address.Tenant]
		if w <= 0 || r.Pos.Index > sw.Through {
			continue
		}
		recAt, err := HistoryRecordAt(r.Kind, r.Data)
		if err != nil {
			return 0, fmt.Errorf("%w: decode history record: %w", ErrStore, err)
		}
		if !HistoryExpired(r.Pos, recAt, a.at, w, sw.Through) {
			continue
		}
		key := r.Address.Key()
		if curKey == nil || string(key) != string(curKey) {
			if err := flush(); err != nil {
				return 0, err
			}
			cur, curKey = r.Address, key
		}
		last = r.Pos
		a.b.DeleteHistory(r.Address, r.Pos)
		a.hash('y', key, u64(r.Pos.Index), u64(uint64(r.Pos.Ordinal)))
		n++
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return n, nil
}
