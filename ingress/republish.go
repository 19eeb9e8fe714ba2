package ingress

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/relay"
	"github.com/rhizon/rhizon/storage"
)

// ErrShardNotHere reports a republish of a shard this node leads no replica
// of.
var ErrShardNotHere = errors.New("ingress: this node does not lead the shard")

// eventSource is a shard replica whose history can be read by position
// (shard.Shard).
type eventSource interface {
	Events(from engine.Position, limit int) ([]storage.HistoryRecord, engine.Position, bool, error)
}

// MaxRepublishPage bounds the events of one Republish call.
const MaxRepublishPage = 10_000

// Republish publishes again up to limit of the shard's events from position
// from (inclusive), with the message ids, subjects and bodies the relay used
// the first time (relay.Republish), and returns how many it published, the
// from of the next call and whether the range is exhausted. It is
// RepublishRange without an upper bound.
func (m *Manager) Republish(ctx context.Context, shard uint32, from engine.Position, limit int) (int, engine.Position, bool, error) {
	r, err := m.RepublishRange(ctx, shard, from, engine.Position{}, limit)
	return r.Count, r.Next, r.Done, err
}

// Republished is what one RepublishRange call did.
type Republished struct {
	// Count events the stream acknowledged (duplicates included).
	Count int
	// Last is the position of the last event published; zero when none.
	Last engine.Position
	// Next is the from of the following call; Done reports that no event
	// remains in the range.
	Next engine.Position
	Done bool
}

// RepublishRange publishes again up to limit of the shard's events at
// positions from from to to (both inclusive; a zero to means no bound), as
// Republish does. It creates RHIZON_EVENTS first when the stream is
// missing.
//
// It reads the leader's replica: the one whose relay publishes, so every
// event it has applied is covered, where a follower may lag and report done
// early. A node that does not lead the shard answers ErrShardNotHere; the
// caller asks the leader.
func (m *Manager) RepublishRange(ctx context.Context, shard uint32, from, to engine.Position, limit int) (Republished, error) {
	out := Republished{Next: from}
	if limit <= 0 || limit > MaxRepublishPage {
		limit = MaxRepublishPage
	}
	var src eventSource
	for _, sh := range m.cfg.Shards() {
		if sh.ID() == shard && sh.IsLeader() {
			src, _ = sh.(eventSource)
		}
	}
	if src == nil {
		return out, fmt.Errorf("%w: shard %d", ErrShardNotHere, shard)
	}
	bounded := to != (engine.Position{})
	if bounded && from.After(to) {
		out.Done = true
		return out, nil
	}
	select {
	case <-m.ready:
	case <-ctx.Done():
		return out, fmt.Errorf("ingress: streams not ready: %w", ctx.Err())
	}
	if err := m.ensureEventsStream(ctx); err != nil {
		return out, err
	}
	events, next, done, err := src.Events(from, limit)
	if err != nil {
		return out, fmt.Errorf("shard %d: read events: %w", shard, err)
	}
	if bounded {
		for i, ev := range events {
			if ev.Pos.After(to) {
				events, next, done = events[:i], successorOf(to), true
				break
			}
		}
		if next.After(to) {
			done = true
		}
	}
	n, err := relay.Republish(ctx, m.relayConfig(), shard, events)
	if err != nil {
		return out, fmt.Errorf("shard %d: republish: %w", shard, err)
	}
	out.Count, out.Next, out.Done = n, next, done
	if n > 0 {
		out.Last = events[n-1].Pos
	}
	return out, nil
}

// successorOf is the smallest position after p.
func successorOf(p engine.Position) engine.Position {
	if p.Ordinal == math.MaxUint32 {
		return engine.Position{Index: p.Index + 1}
	}
	return engine.Position{Index: p.Index, Ordinal: p.Ordinal + 1}
}
