package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/tracectx"
)

// request states: a request is taken by the proposer or cancelled by its
// caller, never both, so a caller that gives up knows whether its command can
// still reach the log.
const (
	reqQueued int32 = iota
	reqTaken
	reqCancelled
)

type request struct {
	cmd   actor.Command
	state atomic.Int32
	done  chan outcome
	span  trace.SpanContext
	at    time.Time // Submit's start
}

type outcome struct {
	res actor.Result
	err error
}

func (r *request) finish(o outcome) { r.done <- o }

// Submit proposes cmd and waits until the entry holding it is committed and
// applied on this replica, then returns its Result. Errors follow the
// three-outcome rule: ErrNotLeader, ErrOverloaded, ErrClosed and a context
// error returned before the command was taken mean it was not applied;
// ErrUnknownOutcome means it may have been.
func (s *Shard) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	ctx, span := s.tracer.Start(ctx, "shard.submit")
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(tracectx.Command(&cmd)...)
		span.SetAttributes(tracectx.KeyShard.Int64(int64(s.id)))
	}
	start := time.Now()
	if s.raft.State() != raft.Leader {
		return actor.Result{}, ErrNotLeader
	}
	if s.fsm.halted.Load() {
		return actor.Result{}, ErrHalted
	}
	r := &request{cmd: cmd, done: make(chan outcome, 1), span: span.SpanContext(), at: start}
	if !s.queue.push(r) {
		s.metrics.overloaded.Add(ctx, 1, s.metrics.shardAttr)
		return actor.Result{}, ErrOverloaded
	}
	select {
	case o := <-r.done:
		s.metrics.submitted(ctx, time.Since(start), o.err)
		if o.err == nil && span.IsRecording() {
			span.SetAttributes(tracectx.Result(&o.res)...)
		}
		return o.res, o.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqCancelled) {
			return actor.Result{}, ctx.Err()
		}
		return actor.Result{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	case <-s.stop:
		if r.state.CompareAndSwap(reqQueued, reqCancelled) {
			return actor.Result{}, ErrClosed
		}
		return actor.Result{}, fmt.Errorf("%w: shard closed", ErrUnknownOutcome)
	}
}

// pipelineBelow decides when a further entry may start while others are in
// flight. Pipelining entries cuts latency when commands come one by one, but
// every entry costs about as much CPU as a command on each replica (Raft's
// bookkeeping and replication, the FSM's Badger batch), so under load it is
// cheaper to have one entry in flight, carrying everything that queued
// meanwhile. Entries in flight holding this many commands or more mean load:
// the next entry then waits for one of them to be applied.
// On 3 nodes with 128 clients that gave 2-3x more commands per entry and a
// fifth less node CPU per command than up to MaxInflight small entries.
const pipelineBelow = 2

// A busy shard's proposer lingers: the commands of a busy shard come in
// bursts (a relay delivering the Sends of an applied entry, a consumer's
// pulled batch, callers answered together resubmitting), and proposing at the
// first of them splits a burst over several entries, whose cost follows them
// to every replica and to the events stream. Sagas, whose commits arrive
// as such bursts, sometimes fell into small entries for a whole
// run and then cost 1.6x the CPU per saga, most of it in nats-server (the
// relay publishes an entry's events as one batch); waiting up to 1 ms kept
// every run out of that (bench/MEASUREMENTS.md, ninth session). A shard
// whose last entry carried fewer than lingerAfter commands (one caller at a
// time) proposes at once.
const (
	DefaultProposeLinger = time.Millisecond
	lingerAfter          = 4
	lingerFill           = 64
)

// awaitFill waits until fill commands are queued or max has passed; false
// when stop closes first.
func awaitFill(q *fairQueue, fill int, max time.Duration, stop <-chan struct{}) bool {
	if q.len() >= fill {
		return true
	}
	t := time.NewTimer(max)
	defer t.Stop()
	for q.len() < fill {
		select {
		case <-q.ready:
		case <-t.C:
			return true
		case <-stop:
			return false
		}
	}
	return true
}

// pipeline is the proposer's view of its entries in flight.
type pipeline struct {
	cmds   atomic.Int64  // commands in entries proposed and not yet applied
	landed chan struct{} // signalled whenever one of them is done
}

func (p *pipeline) busy() bool { return p.cmds.Load() >= pipelineBelow }

func (p *pipeline) done(n int) {
	p.cmds.Add(-int64(n))
	select {
	case p.landed <- struct{}{}:
	default:
	}
}

// proposeLoop group-commits: it waits for a free in-flight slot first and only
// then drains the queue (fairly across tenants, see fairQueue), so while entries are in flight the next batch grows;
// under load it also waits for the entries in flight (see pipelineBelow), and
// then lingers (see DefaultProposeLinger).
func (s *Shard) proposeLoop() {
	defer s.wg.Done()
	p := &pipeline{landed: make(chan struct{}, 1)}
	batch := make([]*request, 0, s.cfg.MaxBatch)
	popped := make([]*request, 0, s.cfg.MaxBatch)
	fill := min(lingerFill, s.cfg.MaxBatch)
	last := 0 // commands in the last entry proposed
	for {
		select {
		case s.inflight <- struct{}{}:
		case <-s.stop:
			return
		}
		// Commands stay in the queue meanwhile, where their callers can
		// still take them back.
		for p.busy() {
			select {
			case <-p.landed:
			case <-s.stop:
				return
			}
		}
		if last >= lingerAfter && s.cfg.ProposeLinger > 0 && !awaitFill(s.queue, fill, s.cfg.ProposeLinger, s.stop) {
			return
		}
		// The queue hands out commands round-robin by tenant, so an entry
		// carries every waiting tenant's oldest commands before a second
		// helping of anyone's.
		batch = batch[:0]
		for len(batch) == 0 {
			for _, r := range s.queue.pop(popped[:0], s.cfg.MaxBatch) {
				batch = take(batch, r)
			}
			if len(batch) > 0 {
				break
			}
			select {
			case <-s.queue.ready:
			case <-s.stop:
				return
			}
		}
		last = len(batch)
		reqs := make([]*request, len(batch))
		copy(reqs, batch)
		s.propose(reqs, p)
	}
}

func take(batch []*request, r *request) []*request {
	if r.state.CompareAndSwap(reqQueued, reqTaken) {
		return append(batch, r)
	}
	return batch
}

// propose stamps logical time, appends one entry and hands the future to a
// waiter. It owns one in-flight slot, released by the waiter.
func (s *Shard) propose(reqs []*request, p *pipeline) {
	le := s.newEntry()
	le.Commands = make([]*recordv1.Command, len(reqs))
	links := make([]trace.Link, len(reqs))
	for i, r := range reqs {
		le.Commands[i] = recordv1.FromCommand(&r.cmd)
		links[i] = trace.Link{SpanContext: r.span}
	}
	_, span := s.tracer.Start(context.Background(), "shard.propose", trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("commands", len(reqs))))
	relay := s.carrier.take()
	if relay != nil {
		le.Relayed = &recordv1.Position{Index: relay.pos.Index, Ordinal: relay.pos.Ordinal}
	}
	le.Check = s.checks.next(s.Meta())
	data, err := marshal.Marshal(le)
	if err != nil {
		span.End()
		<-s.inflight
		err = fmt.Errorf("shard: encode entry: %w", err)
		relay.finish(err)
		for _, r := range reqs {
			r.finish(outcome{err: err})
		}
		return
	}
	s.metrics.batch(len(reqs))
	a0 := time.Now()
	for _, r := range reqs {
		s.metrics.queuedDur.Record(context.Background(), a0.Sub(r.at).Seconds(), s.metrics.shardAttr)
	}
	p.cmds.Add(int64(len(reqs)))
	f := s.raft.Apply(data, s.cfg.ApplyTimeout)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := s.futureError(f)
		if err == nil {
			s.metrics.entryDur.Record(context.Background(), time.Since(a0).Seconds(), s.metrics.shardAttr)
		}
		span.End() // before the replies, so a caller's trace holds the whole propose
		<-s.inflight
		p.done(len(reqs))
		var resp *applyResponse
		if err != nil {
			err = mapRaftErr(err, true)
		} else if resp, _ = f.Response().(*applyResponse); resp == nil {
			err = fmt.Errorf("%w: no response from apply", ErrUnknownOutcome)
		} else {
			err = resp.err
		}
		// The relay's position was applied with the entry or not at all;
		// the results below concern only the commands.
		relay.finish(err)
		if err == nil && len(resp.results) != len(reqs) {
			// Only a replay after restart returns no results, and nobody
			// waits for those; seeing it here means the entry was applied
			// before, which we cannot report precisely.
			err = fmt.Errorf("%w: entry %d was already applied", ErrUnknownOutcome, f.Index())
		}
		for i, r := range reqs {
			if err != nil {
				r.finish(outcome{err: err})
				continue
			}
			r.finish(outcome{res: resp.results[i]})
		}
	}()
}

// futureError waits for f. hashicorp/raft never completes a future still in
// its apply queue when it shuts down, so once Shutdown has returned the
// wait ends with ErrRaftShutdown (an unknown outcome to the callers), and
// Close does not wait forever for this goroutine.
func (s *Shard) futureError(f raft.ApplyFuture) error {
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }() // ends when raft completes f, if ever
	select {
	case err := <-errc:
		return err
	case <-s.raftDown:
		select {
		case err := <-errc:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// stamp returns the logical time of the next entry: the wall clock, but never
// less than any time this replica stamped or applied before. Equal times are
// allowed (positions are unique by index and ordinal); adding 1 ms per entry
// would run logical time ahead of the wall clock at thousands of entries per
// second.
// newEntry starts a log entry: logical time, and the actor revisions the
// cluster has switched to, so every replica decides its commands (and the
// timers it fires) with the same code.
func (s *Shard) newEntry() *recordv1.LogEntry {
	le := &recordv1.LogEntry{Shard: s.id, At: s.stamp(), Retention: s.retention}
	if s.cfg.Revisions == nil {
		return le
	}
	revs := s.cfg.Revisions()
	types := make([]string, 0, len(revs))
	for t := range revs {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		le.Revisions = append(le.Revisions, &recordv1.ActorRevision{ActorType: t, Revision: revs[t]})
	}
	return le
}

func (s *Shard) stamp() int64 {
	s.stampMu.Lock()
	defer s.stampMu.Unlock()
	at := max(s.cfg.Now().UnixMilli(), s.lastAt, s.Meta().At)
	s.lastAt = at
	return at
}

// tickLoop proposes an empty entry when a timer is due and no command entry
// is carrying time forward, so leases expire even on an idle shard.
func (s *Shard) tickLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.raft.State() != raft.Leader || s.fsm.halted.Load() {
			continue
		}
		due, err := s.store.DueTimers(s.cfg.Now().UnixMilli(), 1)
		if err != nil {
			s.log.Error("read due timers", "err", err)
			continue
		}
		if len(due) == 0 {
			continue
		}
		data, _ := marshal.Marshal(s.newEntry())
		if err := s.futureError(s.raft.Apply(data, s.cfg.ApplyTimeout)); err != nil && !errors.Is(err, raft.ErrNotLeader) {
			s.log.Warn("tick entry", "err", err)
		}
	}
}

// Tick proposes a tick entry now and waits for it (tests and operators use it
// to fire due timers without waiting for the tick loop).
func (s *Shard) Tick(ctx context.Context) (engine.Meta, error) {
	data, _ := marshal.Marshal(s.newEntry())
	f := s.raft.Apply(data, s.cfg.ApplyTimeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return s.Meta(), mapRaftErr(err, true)
	case <-ctx.Done():
		return engine.Meta{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	}
}
