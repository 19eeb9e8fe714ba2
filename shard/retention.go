package shard

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/api/recordv1"
)

// retentionRecord is the per-tenant idempotency and history windows as
// every entry carries them, sorted by tenant so that equal settings give
// equal bytes.
func retentionRecord(r, hist map[string]time.Duration) []*recordv1.TenantRetention {
	tenants := make([]string, 0, len(r)+len(hist))
	for _, m := range []map[string]time.Duration{r, hist} {
		for t, w := range m {
			if w > 0 && !slices.Contains(tenants, t) {
				tenants = append(tenants, t)
			}
		}
	}
	slices.Sort(tenants)
	out := make([]*recordv1.TenantRetention, 0, len(tenants))
	for _, t := range tenants {
		out = append(out, &recordv1.TenantRetention{Tenant: t, IdempotencyMs: r[t].Milliseconds(), HistoryMs: hist[t].Milliseconds()})
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sweepLoop has the leader walk the shard's idempotency records in slices
// of SweepRows, one sweep entry per slice, a pass every SweepInterval. Each
// entry is atomic on every replica, and which rows it deletes depends only
// on the state at its index and the windows it carries, so a pass cut short
// (kill -9, a new leader) leaves every replica alike; the next pass (from
// the start, on whichever node leads) deletes what is left.
func (s *Shard) sweepLoop() {
	defer s.wg.Done()
	if len(s.retention) == 0 {
		return
	}
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if len(s.cfg.Retention) > 0 {
			if err := s.SweepPass(context.Background()); err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrClosed) {
				s.log.Warn("retention sweep", "err", err)
			}
		}
		if len(s.cfg.HistoryRetention) > 0 {
			if err := s.HistorySweepPass(context.Background()); err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrClosed) {
				s.log.Warn("history retention sweep", "err", err)
			}
		}
	}
}

// SweepPass proposes sweep entries over all of the shard's idempotency
// records, one slice after the other. Only the leader sweeps.
func (s *Shard) SweepPass(ctx context.Context) error {
	var from []byte
	for {
		if err := s.sweepGoesOn(ctx); err != nil {
			return err
		}
		// The next slice starts after the rows this one examines, read
		// before it deletes any: only sweeps delete records, and rows
		// written meanwhile are too young to expire.
		next, err := s.store.ResultKeyAfter(from, s.cfg.SweepRows)
		if err != nil {
			return err
		}
		le := s.newEntry()
		expired, err := s.sliceExpired(from, le.At)
		if err != nil {
			return err
		}
		// A slice with nothing expired on the leader's own state costs no
		// entry, so an idle shard's log stays quiet. What a proposed sweep
		// deletes is decided at apply time, alike everywhere.
		if expired {
			le.Sweep = &recordv1.RetentionSweep{FromKey: from, Limit: uint32(s.cfg.SweepRows)}
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

// sliceExpired reports whether the slice of SweepRows records from from
// holds one that has expired by at, on this replica's state.
func (s *Shard) sliceExpired(from []byte, at int64) (bool, error) {
	rows, err := s.store.ScanResults(from, s.cfg.SweepRows)
	if err != nil {
		return false, err
	}
	for _, r := range rows {
		w := s.cfg.Retention[r.Address.Tenant]
		if w <= 0 {
			continue
		}
		var pr recordv1.Result
		if err := proto.Unmarshal(r.Data, &pr); err != nil {
			return false, err
		}
		if pr.At != 0 && at-pr.At >= w.Milliseconds() {
			return true, nil
		}
	}
	return false, nil
}

// sweepGoesOn is nil while a sweep pass may propose its next slice: this
// replica still leads, has not halted or closed, and ctx is live.
func (s *Shard) sweepGoesOn(ctx context.Context) error {
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if s.fsm.halted.Load() {
		return ErrHalted
	}
	select {
	case <-s.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	default:
		return nil
	}
}
