package shard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/rhizon/rhizon/api/recordv1"
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
//
// Under load the position rides on the next command entry (LogEntry.Relayed
// beside its commands) instead of an entry of its own: a Raft entry costs
// every replica about as much as a command, and a relay recording every
// 100 ms on each of 64 shards was 640 entries a second. Only when no command
// entry takes it within relayCarryWait does AckRelayed propose one.
func (s *Shard) AckRelayed(ctx context.Context, upTo engine.Position) error {
	if !s.IsLeader() {
		return ErrNotLeader
	}
	t := s.carrier.offer(upTo)
	wait := time.NewTimer(relayCarryWait)
	defer wait.Stop()
	select {
	case err := <-t.done:
		return err
	case <-wait.C:
		if s.carrier.withdraw(t) {
			return s.proposeRelayed(ctx, upTo)
		}
	case <-ctx.Done():
		if s.carrier.withdraw(t) {
			return ctx.Err()
		}
	}
	// A command entry took it meanwhile.
	select {
	case err := <-t.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	}
}

// relayCarryWait is how long AckRelayed waits for a command entry to carry
// its position before it proposes an entry of its own. It is long against
// the time between a shard's commands even at low load (at 100 commands/s
// over 64 shards, 0.6 s on average; with 50 ms nearly every command had a
// relay entry after it, 1.9 entries per command), and short against the
// minutes of JetStream's duplicate window that cover anything a new leader
// publishes again. The relay publishes on meanwhile; only its next record
// waits.
const relayCarryWait = 2 * time.Second

func (s *Shard) proposeRelayed(ctx context.Context, upTo engine.Position) error {
	le := s.newEntry()
	le.Relayed = &recordv1.Position{Index: upTo.Index, Ordinal: upTo.Ordinal}
	data, err := marshal.Marshal(le)
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

// relayTicket is a relay position waiting for an entry to carry it; done
// receives the outcome of that entry.
type relayTicket struct {
	pos  engine.Position
	done chan error
}

// relayCarrier hands the relay's position to the proposer. There is one
// relay per shard leader, so at most one ticket waits at a time.
type relayCarrier struct {
	mu sync.Mutex
	t  *relayTicket
}

func (c *relayCarrier) offer(pos engine.Position) *relayTicket {
	t := &relayTicket{pos: pos, done: make(chan error, 1)}
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
	return t
}

// finish reports the outcome of the entry that carried t (nil t: none did).
func (t *relayTicket) finish(err error) {
	if t != nil {
		t.done <- err
	}
}

// take hands the waiting ticket, if any, to an entry being proposed.
func (c *relayCarrier) take() *relayTicket {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = nil
	return t
}

// withdraw takes t back unless an entry took it already.
func (c *relayCarrier) withdraw(t *relayTicket) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t != t {
		return false
	}
	c.t = nil
	return true
}

// Events returns the shard's committed events from position from
// (inclusive), in position order, read from this replica's history (see
// storage.ShardStore.Events): for rebuilding the events stream.
func (s *Shard) Events(from engine.Position, limit int) ([]storage.HistoryRecord, engine.Position, bool, error) {
	return s.store.Events(from, limit)
}
