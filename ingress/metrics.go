package ingress

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/shard"
)

// metrics: consumer lag per shard (read from JetStream at scrape time),
// redeliveries, dead letters, commands applied from ingress, events and
// commands published, and the relay's outbox backlog.
type metrics struct {
	reg         metric.Registration
	redeliv     metric.Int64Counter
	deadLetters metric.Int64Counter
	commands    metric.Int64Counter
	publishedC  metric.Int64Counter
	sentC       metric.Int64Counter

	mu        sync.Mutex
	consumers map[consumerKey]tracked
	backlogs  map[uint32]int
}

func newMetrics(m *Manager) (*metrics, error) {
	meter := otel.Meter("github.com/rhizon/rhizon/ingress")
	mt := &metrics{consumers: map[consumerKey]tracked{}, backlogs: map[uint32]int{}}
	var err error
	check := func(e error) {
		if err == nil {
			err = e
		}
	}
	var e error
	mt.redeliv, e = meter.Int64Counter("rhizon.ingress.redeliveries", metric.WithDescription("Ingress messages the shard leader tried again after a failed try."))
	check(e)
	mt.deadLetters, e = meter.Int64Counter("rhizon.ingress.dead_letters", metric.WithDescription("Ingress messages moved to the dead-letter subject, by kind: rejected (can never apply) or poison (kept failing)."))
	check(e)
	mt.commands, e = meter.Int64Counter("rhizon.ingress.commands", metric.WithDescription("Ingress commands applied, by result as in rhizon.commands: accepted, conflict, violation, invalid, business, replay (a redelivered or republished command already applied) or duplicate (another command under a key already used)."))
	check(e)
	mt.publishedC, e = meter.Int64Counter("rhizon.outbox.published", metric.WithDescription("Outbox rows published to JetStream; duplicate=true when JetStream already had the message id."))
	check(e)
	mt.sentC, e = meter.Int64Counter("rhizon.outbox.sent_direct", metric.WithDescription("Actors' Sends the relay submitted to their targets' shard leaders directly, not through the ingress stream."))
	check(e)
	lag, e := meter.Int64ObservableGauge("rhizon.ingress.consumer_lag", metric.WithDescription("Ingress messages of a shard not yet finished: not yet delivered plus in flight."))
	check(e)
	backlog, e := meter.Int64ObservableGauge("rhizon.outbox.backlog", metric.WithDescription("Outbox rows the relay found unpublished at its last read (at most 1024)."))
	check(e)
	if err != nil {
		return nil, err
	}
	mt.reg, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		mt.mu.Lock()
		cons := make(map[consumerKey]tracked, len(mt.consumers))
		for k, c := range mt.consumers {
			cons[k] = c
		}
		for id, n := range mt.backlogs {
			o.ObserveInt64(backlog, int64(n), shardAttr(id))
		}
		mt.mu.Unlock()
		// A shard's lag is the sum over its streams (the nodes' and
		// each producer's).
		lags := map[uint32]int64{}
		for k, c := range cons {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := c.Info(ictx)
			cancel()
			if err == nil {
				lags[k.shard] += int64(info.NumPending) + int64(c.inFlight())
			}
		}
		for id, n := range lags {
			o.ObserveInt64(lag, n, shardAttr(id))
		}
		return nil
	}, lag, backlog)
	return mt, err
}

func shardAttr(id uint32) metric.MeasurementOption {
	return metric.WithAttributes(attribute.Int("shard", int(id)))
}

func (mt *metrics) unregister() {
	if mt.reg != nil {
		_ = mt.reg.Unregister()
	}
}

type consumerKey struct {
	shard  uint32
	stream string
}

// track adds a shard's consumer of stream to its lag: the messages the
// consumer has yet to deliver plus inFlight, those delivered and not
// finished.
func (mt *metrics) track(id uint32, stream string, c jetstream.Consumer, inFlight func() int) {
	mt.mu.Lock()
	mt.consumers[consumerKey{id, stream}] = tracked{c, inFlight}
	mt.mu.Unlock()
}

type tracked struct {
	jetstream.Consumer
	inFlight func() int
}

func (mt *metrics) untrack(id uint32) {
	mt.mu.Lock()
	for k := range mt.consumers {
		if k.shard == id {
			delete(mt.consumers, k)
		}
	}
	delete(mt.backlogs, id)
	mt.mu.Unlock()
}

func (mt *metrics) backlog(id uint32, n int) {
	mt.mu.Lock()
	mt.backlogs[id] = n
	mt.mu.Unlock()
}

func (mt *metrics) redelivered(ctx context.Context, id uint32) { mt.redeliv.Add(ctx, 1, shardAttr(id)) }

func (mt *metrics) deadLetter(ctx context.Context, id uint32, kind string) {
	mt.deadLetters.Add(ctx, 1, metric.WithAttributes(attribute.Int("shard", int(id)), attribute.String("kind", kind)))
}

func (mt *metrics) applied(ctx context.Context, id uint32, r *actor.Result) {
	mt.commands.Add(ctx, 1, metric.WithAttributes(attribute.Int("shard", int(id)), attribute.String("result", shard.ResultKind(r))))
}

// sent counts Sends the relay delivered to their targets' leaders directly.
func (mt *metrics) sent(ctx context.Context, id uint32, n int) {
	mt.sentC.Add(ctx, int64(n), metric.WithAttributes(attribute.Int("shard", int(id))))
}

func (mt *metrics) published(ctx context.Context, id uint32, n int, dup bool) {
	mt.publishedC.Add(ctx, int64(n), metric.WithAttributes(attribute.Int("shard", int(id)), attribute.Bool("duplicate", dup)))
}
