package ingress

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ackBatch is the most acks held before they are sent without waiting for
// the rest of the interval.
const ackBatch = 256

// acker gathers the acks of applied messages and sends them together. Each
// ack is a message to the consumer's leader (often across a route), a
// proposal to the consumer's Raft group and, on the stream leader, a
// work-queue removal proposed to the stream's; sent together they leave in
// one write and their proposals share append entries. (The stream's entries
// are bounded by its WAL fsyncs anyway, so removals mostly shared entries
// with publishes before: the saving is in messages, not fsyncs.) An ack may
// wait: the command is committed already (the durability promise is kept),
// and a held ack lost with the node only means a redelivery, which the
// engine answers from the idempotency record.
type acker struct {
	every time.Duration
	mu    sync.Mutex
	held  []jetstream.Msg
	kick  chan struct{} // the first ack of a batch is held
	full  chan struct{} // ackBatch acks are held
}

func newAcker(every time.Duration) *acker {
	return &acker{every: every, kick: make(chan struct{}, 1), full: make(chan struct{}, 1)}
}

// ack holds msg's ack until the batch goes out.
func (a *acker) ack(msg jetstream.Msg) {
	a.mu.Lock()
	a.held = append(a.held, msg)
	n := len(a.held)
	a.mu.Unlock()
	switch n {
	case 1:
		signal(a.kick)
	case ackBatch:
		signal(a.full)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run sends the held acks an interval after the first of a batch was held
// (earlier when ackBatch are), until ctx ends. The caller flushes what is
// left once nothing acks any more.
func (a *acker) run(ctx context.Context) {
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		t.Reset(a.every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-a.full:
			t.Stop()
		}
		a.flush()
	}
}

// flush sends every held ack. nats.go writes them into the connection's
// buffer, so they leave in one write.
func (a *acker) flush() {
	a.mu.Lock()
	held := a.held
	a.held = nil
	a.mu.Unlock()
	for _, m := range held {
		_ = m.Ack()
	}
	// A batch signalled full after this flush took it would send the next
	// one early: harmless.
}
