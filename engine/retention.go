package engine

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
)

// Retention of idempotency records. Whether a resent key is a duplicate
// changes what a command does, so expiry is a function of the log only: a
// result stored while its tenant has a window carries the logical time of
// its entry (recordv1.Result.at), the windows come in the entry
// (Entry.Retention, stamped by the leader), and a lookup treats a result
// older than the window as absent. Deleting expired rows is space reclaim,
// but the rows are fed to the state hash, so it is a log entry too
// (Entry.Sweep): one atomic batch, alike on every replica.

// MaxSweepRows bounds the rows one sweep entry examines, so a cleanup of
// many rows is many small entries (each atomic), never one huge batch.
const MaxSweepRows = 4096

// resultAtField is the field number of recordv1.Result.at.
const resultAtField = 12

// resultStampRoom is the most stampResult appends: the field's tag and a
// varint of up to 10 bytes.
const resultStampRoom = 1 + 10

// Sweep asks an entry to delete the expired results among the next Limit
// rows of the shard's result keyspace from From on (an address key followed
// by an idempotency key; empty for the start).
type Sweep struct {
	From  []byte
	Limit int
}

// ResultRow is one stored idempotency record.
type ResultRow struct {
	Address actor.Address
	Key     string
	Data    []byte
}

// ResultSweeper is an optional Store capability that sweeps need. A store
// without it makes sweep entries no-ops (alike on every replica, as every
// replica runs the same store).
type ResultSweeper interface {
	// ScanResults returns up to limit result rows, in key order, whose key
	// (after the shard prefix and tag) is at or after from.
	ScanResults(from []byte, limit int) ([]ResultRow, error)
}

// ResultDeleter is the Batch capability a sweep writes with.
type ResultDeleter interface {
	DeleteResult(addr actor.Address, key string)
}

// window is the tenant's idempotency window in ms in this entry; 0 = none.
func (a *applier) window(tenant string) int64 {
	return a.retention[tenant]
}

// expired reports whether a stored result's entry time is outside the
// tenant's window at this entry's logical time. Results stored without a
// time (before a window applied) never expire.
func (a *applier) expired(tenant string, storedAt int64) bool {
	w := a.window(tenant)
	return w > 0 && storedAt != 0 && a.at-storedAt >= w
}

// stampResult appends the entry's logical time to an encoded result when
// the tenant has a window (a field appended to a protobuf message is read
// as if it were in order).
func (a *applier) stampResult(tenant string, data []byte) []byte {
	if a.window(tenant) <= 0 {
		return data
	}
	data = protowire.AppendTag(data, resultAtField, protowire.VarintType)
	return protowire.AppendVarint(data, uint64(a.at))
}

// sweep deletes the expired results among the rows the entry names.
func (a *applier) sweep(sw *Sweep) (int, error) {
	if sw == nil || len(a.retention) == 0 {
		return 0, nil
	}
	sc, ok := a.e.store.(ResultSweeper)
	del, ok2 := a.b.(ResultDeleter)
	if !ok || !ok2 {
		return 0, nil
	}
	limit := min(max(sw.Limit, 1), MaxSweepRows)
	rows, err := sc.ScanResults(sw.From, limit)
	if err != nil {
		return 0, fmt.Errorf("%w: scan results: %w", ErrStore, err)
	}
	n := 0
	for _, r := range rows {
		if a.window(r.Address.Tenant) <= 0 {
			continue
		}
		var pr recordv1.Result
		if err := proto.Unmarshal(r.Data, &pr); err != nil {
			return 0, fmt.Errorf("%w: decode stored result: %w", ErrStore, err)
		}
		if !a.expired(r.Address.Tenant, pr.At) {
			continue
		}
		del.DeleteResult(r.Address, r.Key)
		a.hash('x', r.Address.Key(), []byte(r.Key))
		n++
	}
	return n, nil
}
