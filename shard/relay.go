package shard

import (
	"context"
	"fmt"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// Outbox returns up to limit outbox rows after position after, in log order:
// the events and actor-to-actor commands the relay has yet to publish.
func (s *Shard) Outbox(after engine.Position, limit int) ([]storage.OutboxRow, error) {
	return s.store.Outbox(after, limit)
}

// Outboxed is signalled after an entry was applied (which may have written
// outbox rows), so the relay need not poll. It has one reader: the relay of
// this replica; signals while it is busy collapse into one.
func (s *Shard) Outboxed() <-chan struct{} { return s.outboxWake }

func (s *Shard) wakeRelay() {
	select {
	case s.outboxWake <- struct{}{}:
	default:
	}
}

// AckRelayed records in the log that every outbox row at or before upTo was
// published, so every replica deletes those rows and the next leader's relay
// starts after them. It returns once the entry is applied here.
func (s *Shard) AckRelayed(ctx context.Context, upTo engine.Position) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	data, err := marshal.Marshal(&pb.LogEntry{Shard: s.id, At: s.stamp(), Relayed: &pb.Position{Index: upTo.Index, Ordinal: upTo.Ordinal}})
	if err != nil {
		return fmt.Errorf("shard %d: encode relay entry: %w", s.id, err)
	}
	f := s.raft.Apply(data, s.cfg.ApplyTimeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return mapRaftErr(err, true)
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	}
}
