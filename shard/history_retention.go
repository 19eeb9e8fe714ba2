package shard

import (
	"context"
	"errors"
	"math"
	"strconv"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
)

// HistorySweepPass has the leader propose history sweep entries over all
// of the shard's history records, slice by slice (SweepRows rows each),
// bounded by the last index this leader snapshotted: every replica deletes
// at or below the bound the entry names, whatever it snapshotted itself.
// Nothing is proposed for a slice with nothing to delete on the leader's own
// state. Records old enough but past the bound wait for a snapshot that
// covers them; on a shard with no new entries none would come (a new leader
// starts from its own older snapshot), so the pass then takes one itself and
// the next pass deletes them.
func (s *Shard) HistorySweepPass(ctx context.Context) error {
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	through, _ := strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64)
	waiting := false
	defer func() {
		if waiting {
			if err := s.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
				s.log.Warn("history sweep: snapshot for records past the last one", "err", err)
			}
		}
	}()
	var from []byte
	for {
		if err := s.sweepGoesOn(ctx); err != nil {
			return err
		}
		// As in SweepPass, the next slice's start is read before this one
		// deletes: records appended meanwhile are young and past through.
		next, err := s.store.HistoryKeyAfter(from, s.cfg.SweepRows)
		if err != nil {
			return err
		}
		le := s.newEntry()
		old, past, err := s.sliceHistoryExpired(from, le.At, through)
		if err != nil {
			return err
		}
		waiting = waiting || past
		if old && through > 0 {
			le.HistorySweep = &recordv1.HistorySweep{FromKey: from, Limit: uint32(s.cfg.SweepRows), ThroughIndex: through}
			data, err := marshal.Marshal(le)
			if err != nil {
				return err
			}
			if err := s.futureError(s.raft.Apply(data, s.cfg.ApplyTimeout)); err != nil {
				return mapRaftErr(err, true)
			}
		}
		if next == nil {
			return nil
		}
		from = next
	}
}

// sliceHistoryExpired reports whether the slice of SweepRows history rows
// from from holds one a history sweep at at bounded by through deletes, on
// this replica's state, and whether it holds one old enough but past through.
func (s *Shard) sliceHistoryExpired(from []byte, at int64, through uint64) (old, past bool, err error) {
	rows, err := s.store.ScanHistory(from, s.cfg.SweepRows)
	if err != nil {
		return false, false, err
	}
	for _, r := range rows {
		w := s.cfg.HistoryRetention[r.Address.Tenant]
		if w <= 0 {
			continue
		}
		recAt, err := engine.HistoryRecordAt(r.Kind, r.Data)
		if err != nil {
			return false, false, err
		}
		if !engine.HistoryExpired(r.Pos, recAt, at, w.Milliseconds(), math.MaxUint64) {
			continue
		}
		if r.Pos.Index > through {
			past = true
		} else {
			old = true
		}
	}
	return old, past, nil
}
