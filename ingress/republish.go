package ingress

import (
	"context"
	"errors"
	"fmt"

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
// from of the next call and whether the range is exhausted.
//
// It reads the leader's replica: the one whose relay publishes, so every
// event it has applied is covered, where a follower may lag and report done
// early. A node that does not lead the shard answers ErrShardNotHere; the
// caller asks the leader.
func (m *Manager) Republish(ctx context.Context, shard uint32, from engine.Position, limit int) (int, engine.Position, bool, error) {
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
		return 0, from, false, fmt.Errorf("%w: shard %d", ErrShardNotHere, shard)
	}
	events, next, done, err := src.Events(from, limit)
	if err != nil {
		return 0, from, false, fmt.Errorf("shard %d: read events: %w", shard, err)
	}
	n, err := relay.Republish(ctx, m.relayConfig(), shard, events)
	if err != nil {
		return 0, from, false, fmt.Errorf("shard %d: republish: %w", shard, err)
	}
	return n, next, done, nil
}
