package ingress

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// How a shard's commands leave the ingress stream.
//
// The streams keep limits retention and the shard leader reads its subject
// with an ordered consumer: an ephemeral, unreplicated, unacknowledged
// consumer of its own that delivers every message of the subject in stream
// order, from the first one still in the stream. Nothing is acked; instead
// the leader purges its subject below the lowest message it has not finished
// (applied, dead-lettered or passed on to its shard), every PurgeInterval.
//
// Why: on a work-queue stream every ack was a message to the consumer's
// leader, a proposal to the consumer's Raft group on each of its replicas,
// and a deletion proposed through the stream's Raft log, fsynced on each
// replica: twice the replicated work of the publish itself. One purge per
// shard per interval replaces all of it (ingress 2,235-2,371 against
// 1,060-1,207 commands/s, 775 against 1,460-1,620 µs of CPU per command,
// bench/MEASUREMENTS.md 2026-12-07).
//
// Why it keeps exactly-once effect: a message is purged only once its
// command committed (or it was dead-lettered, or passed on), and a worker
// only purges below what it has seen itself: an ordered consumer has no
// gaps, so every message below the lowest one in flight was finished by
// this worker. A new leader, or a worker that binds again, starts at the
// first message still in the stream: the ones applied since the last purge
// are delivered again and the engine answers them from the stored result of
// their idempotency key (derived from the stream sequence when the producer
// set none), a replay, not a second effect. Per-entity order holds the same
// way. A message that cannot apply yet stays unfinished (the purge stops
// below it) and is tried again by the worker itself after a backoff.
//
// The limits (MaxMsgs, MaxBytes, DiscardNew) still refuse publishes when a
// shard falls behind: unpurged messages count against them as unacked ones
// did. Streams of the work-queue layout are moved over at start (migrate.go).

// orderedConsumer opens the ordered consumer of one subject. MaxResetAttempts
// bounds how long it tries to recreate itself (a lost server, a lost
// connection) before the pull fails, so health says the consumer is not
// running and the worker binds again.
func (w *worker) orderedConsumer(ctx context.Context, src source) (jetstream.Consumer, error) {
	return w.m.js.OrderedConsumer(ctx, src.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{src.subject},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute, // one left behind by a stopped worker goes soon
		MaxResetAttempts:  3,
	})
}

// floor tracks, for one subject, the messages a worker is working on, and
// how far it has purged.
type floor struct {
	src      source
	inFlight map[uint64]int // stream sequence: deliveries not finished
	last     uint64         // the highest sequence delivered
	purged   uint64         // everything below it is purged
}

// floors are a worker's, one per source.
type floors struct {
	mu sync.Mutex
	by map[source]*floor
}

// delivered records that seq of src is in the worker's hands: the purge
// stops below it until finished.
func (f *floors) delivered(src source, seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[source]*floor{}
	}
	fl := f.by[src]
	if fl == nil {
		fl = &floor{src: src, inFlight: map[uint64]int{}}
		f.by[src] = fl
	}
	fl.inFlight[seq]++
	fl.last = max(fl.last, seq)
}

// finished records that one delivery of seq is done with: applied,
// dead-lettered or passed on.
func (f *floors) finished(src source, seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.by[src]
	if fl == nil {
		return
	}
	if fl.inFlight[seq]--; fl.inFlight[seq] <= 0 {
		delete(fl.inFlight, seq)
	}
}

// inFlight is how many messages of src the worker holds unfinished.
func (f *floors) inFlight(src source) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl := f.by[src]; fl != nil {
		return len(fl.inFlight)
	}
	return 0
}

// purge is one purge to send: every message of src below upTo.
type purge struct {
	src  source
	upTo uint64
}

// due lists the purges that would move a floor.
func (f *floors) due() []purge {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []purge
	for _, fl := range f.by {
		upTo := fl.last + 1
		for seq := range fl.inFlight {
			upTo = min(upTo, seq)
		}
		if upTo > fl.purged {
			out = append(out, purge{fl.src, upTo})
		}
	}
	slices.SortFunc(out, func(a, b purge) int { return int(a.src.shard) - int(b.src.shard) })
	return out
}

func (f *floors) purgedTo(p purge) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl := f.by[p.src]; fl != nil {
		fl.purged = max(fl.purged, p.upTo)
	}
}

// purgeLoop purges what the worker finished, every PurgeInterval, until
// lanesDone is closed, and once more then (what the lanes finished last).
func (w *worker) purgeLoop(lanesDone <-chan struct{}) {
	t := time.NewTicker(w.m.cfg.PurgeInterval)
	defer t.Stop()
	streams := map[string]jetstream.Stream{}
	for {
		stop := false
		select {
		case <-lanesDone:
			stop = true
		case <-t.C:
		}
		for _, p := range w.floors.due() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := w.purge(ctx, streams, p)
			cancel()
			if err != nil {
				// Tried again at the next tick (or by the next leader);
				// meanwhile the messages only count against the limits.
				w.log.Debug("ingress purge failed; will retry", "stream", p.src.stream, "subject", p.src.subject, "err", err)
				continue
			}
			w.floors.purgedTo(p)
		}
		if stop {
			return
		}
	}
}

func (w *worker) purge(ctx context.Context, streams map[string]jetstream.Stream, p purge) error {
	s := streams[p.src.stream]
	if s == nil {
		var err error
		if s, err = w.m.js.Stream(ctx, p.src.stream); err != nil {
			return err
		}
		streams[p.src.stream] = s
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject(p.src.subject), jetstream.WithPurgeSequence(p.upTo))
}
