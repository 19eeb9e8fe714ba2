package relay

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/tracectx"
)

// Actors' Sends are submitted to their target's shard leader directly
// (Config.Send): a hop of a saga is then one Raft commit on the target
// instead of a replicated JetStream write, a delivery, an ack and the work
// queue's replicated removal before that commit. And they are delivered as
// they are read, not a page at a time: a Send waits only for the Send before
// it to the same entity, never for the page's slowest commit (measured: a
// page of ~100 Sends took 60-310 ms to deliver whole, its events 18-100 ms).
//
// JetStream stays the path whenever the direct one is not sure to keep a
// target entity's Sends in the order they were sent:
//
//   - a target shard starts on the stream: the relay goes direct to it only
//     once its ingress subject holds no message (Config.Drained), that is
//     once every Send an earlier relay published to it has applied (a
//     message leaves the work-queue stream when its command committed);
//   - a direct Send that fails (no leader within the wait, overloaded, an
//     outcome unknown) goes to the stream, and so does every later Send to
//     that shard, until its subject is drained again.
//
// Exactly-once is the idempotency key's: a Send delivered both ways, or
// again by the next leader's relay, replays its first result.

// directWait bounds one direct Send; past it the Send goes to the stream.
const directWait = 5 * time.Second

// drainedEvery is Config.DrainedEvery's default.
const drainedEvery = time.Second

// sendsInFlight bounds the Sends being delivered at once; past it the relay
// reads no further.
const sendsInFlight = 1024

// route is a relay's view of one target shard: direct, or on the stream
// and asked again at checked+DrainedEvery.
type route struct {
	mu      sync.Mutex
	direct  bool
	checked time.Time
}

// sender delivers one relay run's Sends.
type sender struct {
	r    *Relay
	ctx  context.Context
	wg   sync.WaitGroup
	slot chan struct{} // one per Send in flight

	mu     sync.Mutex
	routes map[uint32]*route
	keys   map[string][]*sendItem // per target entity: [0] in flight, the rest waiting
	order  []*sendItem            // not yet delivered, in outbox order
	added  engine.Position        // the last position handed over
	floor  engine.Position        // every Send up to here is delivered
}

type sendItem struct {
	om        outMsg
	pos       engine.Position
	delivered bool
}

func newSender(ctx context.Context, r *Relay) *sender {
	return &sender{r: r, ctx: ctx, slot: make(chan struct{}, sendsInFlight), routes: map[uint32]*route{}, keys: map[string][]*sendItem{}}
}

// add hands over a page's Sends, in outbox order; positions handed over
// before (a page read again after its events failed) are skipped. It
// blocks while sendsInFlight Sends are on their way.
func (s *sender) add(items []sendItem) {
	for i := range items {
		it := &items[i]
		if !it.pos.After(s.added) {
			continue
		}
		s.added = it.pos
		select {
		case s.slot <- struct{}{}:
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		s.order = append(s.order, it)
		q := append(s.keys[it.om.key], it)
		s.keys[it.om.key] = q
		s.mu.Unlock()
		if len(q) == 1 {
			s.start(it)
		}
	}
}

func (s *sender) start(it *sendItem) {
	s.wg.Go(func() {
		for it != nil {
			s.deliver(it)
			if s.ctx.Err() != nil {
				return
			}
			it = s.next(it)
		}
	})
}

// next marks it delivered and returns the Send waiting behind it, if any.
func (s *sender) next(it *sendItem) *sendItem {
	<-s.slot
	s.mu.Lock()
	defer s.mu.Unlock()
	it.delivered = true
	q := s.keys[it.om.key][1:]
	if len(q) == 0 {
		delete(s.keys, it.om.key)
		return nil
	}
	s.keys[it.om.key] = q
	return q[0]
}

// safe is the position up to which the outbox is relayed: events up to
// published, and every Send up to it delivered.
func (s *sender) safe(published engine.Position) engine.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for n < len(s.order) && s.order[n].delivered {
		s.floor = s.order[n].pos
		n++
	}
	s.order = s.order[n:]
	if len(s.order) == 0 && published.After(s.floor) {
		s.floor = published // every Send read so far is delivered
	}
	if s.floor.After(published) {
		return published
	}
	return s.floor
}

// wait returns once every delivery ended (they end with the run's ctx).
func (s *sender) wait() { s.wg.Wait() }

// deliver takes one Send to its target: directly when it may, else through
// the ingress stream; it retries until one works or the run ends.
func (s *sender) deliver(it *sendItem) {
	om := &it.om
	defer endSpans([]outMsg{*om}, nil)
	r := s.r
	for try := 0; s.ctx.Err() == nil; try++ {
		if om.cmd != nil && s.directTo(om.shard) {
			sctx, cancel := context.WithTimeout(s.ctx, directWait)
			err := r.cfg.Send(sctx, om.cmd.ToActor())
			cancel()
			if err == nil {
				if r.cfg.Sent != nil {
					r.cfg.Sent(s.ctx, r.src.ID(), 1)
				}
				return
			}
			if s.ctx.Err() != nil {
				return
			}
			r.cfg.Log.Debug("outbox relay: a direct Send failed; Sends to its shard go through JetStream until its subject is drained",
				"target_shard", om.shard, "err", err)
			s.toStream(om.shard)
		}
		if err := s.publish(om); err == nil {
			return
		} else if s.ctx.Err() == nil {
			r.cfg.Log.Warn("outbox relay: will retry a Send", "subject", om.msg.Subject, "err", err)
		}
		sleep(s.ctx, min(time.Duration(try+1)*100*time.Millisecond, time.Second))
	}
}

// publish stores om in the ingress stream.
func (s *sender) publish(om *outMsg) error {
	pctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	ack, err := s.r.cfg.JS.PublishMsg(pctx, om.msg, jetstream.WithMsgID(om.id))
	if err != nil {
		return fmt.Errorf("publish %s: %w", om.msg.Subject, err)
	}
	s.r.cfg.Published(s.ctx, s.r.src.ID(), 1, ack.Duplicate)
	return nil
}

// directTo reports whether Sends to shard may go direct now.
func (s *sender) directTo(shard uint32) bool {
	s.mu.Lock()
	rt := s.routes[shard]
	if rt == nil {
		rt = &route{}
		s.routes[shard] = rt
	}
	s.mu.Unlock()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	every := s.r.cfg.DrainedEvery
	if every <= 0 {
		every = drainedEvery
	}
	if rt.direct || time.Since(rt.checked) < every {
		return rt.direct
	}
	rt.checked = time.Now()
	dctx, cancel := context.WithTimeout(s.ctx, directWait)
	defer cancel()
	ok, err := s.r.cfg.Drained(dctx, shard)
	if err != nil {
		s.r.cfg.Log.Debug("outbox relay: is the target's ingress subject drained", "shard", shard, "err", err)
	}
	rt.direct = ok && err == nil
	return rt.direct
}

// toStream puts shard's Sends on the stream until its subject is drained.
func (s *sender) toStream(shard uint32) {
	s.mu.Lock()
	rt := s.routes[shard]
	s.mu.Unlock()
	rt.mu.Lock()
	rt.direct, rt.checked = false, time.Now()
	rt.mu.Unlock()
}

// directCommand is the Send of om as the target's leader applies it: its
// trace continues under the relay's span when it has one.
func directCommand(om *outMsg) {
	if tp := om.msg.Header.Get(tracectx.Header); tp != "" {
		om.cmd.Traceparent = tp
	}
}

// validSend reports whether c passes the checks the ingress worker makes
// before it submits a command; one that does not keeps the stream's path to
// its dead letter.
func validSend(c *pb.Command) bool {
	cmd := c.ToActor()
	return cmd.ID != "" && cmd.IdempotencyKey != "" && cmd.Validate() == nil
}

// eventsLane publishes the events of the pages handed to it while the
// relay reads on. Each publication takes every event handed over since the
// last one, in order (their order is the events' per-entity order): as
// large a batch as waiting for the page to publish gave before, without
// holding up the Sends read meanwhile.
type eventsLane struct {
	r     *Relay
	ctx   context.Context
	wg    sync.WaitGroup
	kick  chan struct{} // events were handed over
	freed chan struct{} // the lane took what was waiting

	mu      sync.Mutex
	waiting []outMsg
	end     engine.Position // the last row handed over
	done    engine.Position // every row up to here is published
}

// lanePending is how many events may wait for the lane before the relay
// stops reading.
const lanePending = 4 * relayPage

func newEventsLane(ctx context.Context, r *Relay) *eventsLane {
	l := &eventsLane{r: r, ctx: ctx, kick: make(chan struct{}, 1), freed: make(chan struct{}, 1)}
	l.wg.Go(l.run)
	return l
}

// add hands over a page's events (end: its last row); it blocks while
// lanePending events wait already.
func (l *eventsLane) add(ctx context.Context, msgs []outMsg, end engine.Position) {
	for {
		l.mu.Lock()
		if len(l.waiting) < lanePending {
			l.waiting = append(l.waiting, msgs...)
			l.end = end
			l.mu.Unlock()
			signal(l.kick)
			return
		}
		l.mu.Unlock()
		select {
		case <-l.freed:
		case <-ctx.Done():
			return
		}
	}
}

func (l *eventsLane) run() {
	for {
		select {
		case <-l.kick:
		case <-l.ctx.Done():
			return
		}
		l.mu.Lock()
		msgs, end := l.waiting, l.end
		l.waiting = nil
		l.mu.Unlock()
		signal(l.freed)
		if !l.publish(msgs, end) {
			return
		}
	}
}

// publish publishes msgs, retrying until they are stored or the run ends
// (false).
func (l *eventsLane) publish(msgs []outMsg, end engine.Position) bool {
	for {
		err := l.r.publishKind(l.ctx, msgs, l.r.cfg.Atomic())
		if err == nil {
			endSpans(msgs, nil)
			l.mu.Lock()
			l.done = end
			l.mu.Unlock()
			return true
		}
		if l.ctx.Err() != nil {
			endSpans(msgs, err)
			return false
		}
		l.r.cfg.Log.Warn("outbox relay: will retry", "err", err)
		sleep(l.ctx, time.Second)
	}
}

// published is the position up to which events are published.
func (l *eventsLane) published() engine.Position {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

func (l *eventsLane) wait() { l.wg.Wait() }

// signal wakes the receiver of c, once, without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
