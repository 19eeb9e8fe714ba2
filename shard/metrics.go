package shard

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

var marshal = proto.MarshalOptions{Deterministic: true}

// metrics are the shard's OpenTelemetry instruments. Instruments are shared by
// every shard of the process; the shard id is an attribute.
type metrics struct {
	shardAttr metric.MeasurementOption
	// Attribute sets built once: merging {shard} with another attribute on
	// every measurement sorted and hashed a new set each time, a few µs per
	// applied entry and per submit.
	byKind          map[string]metric.MeasurementOption // "result" of rhizon.commands
	okAttr, fail    metric.MeasurementOption            // "status" of rhizon.submit.duration
	commands        metric.Int64Counter
	timers          metric.Int64Counter
	violations      metric.Int64Counter
	batchSize       metric.Int64Histogram
	submitDur       metric.Float64Histogram
	queuedDur       metric.Float64Histogram // Submit to taken into an entry
	entryDur        metric.Float64Histogram // entry proposed to applied on the leader
	overloaded      metric.Int64Counter
	entries         metric.Int64Counter
	diverged        metric.Int64Counter
	revisionMissing metric.Int64Counter
	swept           metric.Int64Counter
	historySwept    metric.Int64Counter
	reads           metric.Int64Counter
	leaseRead       metric.MeasurementOption // "confirmed" of rhizon.reads.linearizable
	roundRead       metric.MeasurementOption
}

func newMetrics(id uint32) (*metrics, error) {
	m := otel.Meter("github.com/rhizon/rhizon/shard")
	var err error
	shard := attribute.Int("shard", int(id))
	mt := &metrics{
		shardAttr: metric.WithAttributes(shard),
		okAttr:    metric.WithAttributeSet(attribute.NewSet(shard, attribute.String("status", "ok"))),
		fail:      metric.WithAttributeSet(attribute.NewSet(shard, attribute.String("status", "error"))),
		byKind:    map[string]metric.MeasurementOption{},
	}
	for _, k := range []string{"accepted", "duplicate", "replay", actor.ReasonNone.String(), actor.ReasonConflict.String(),
		actor.ReasonViolation.String(), actor.ReasonInvalid.String(), actor.ReasonBusiness.String()} {
		mt.byKind[k] = metric.WithAttributeSet(attribute.NewSet(shard, attribute.String("result", k)))
	}
	check := func(e error) {
		if err == nil {
			err = e
		}
	}
	var e error
	mt.commands, e = m.Int64Counter("rhizon.commands", metric.WithDescription("Commands applied, by result: accepted, duplicate, replay, conflict, violation, invalid, business."))
	check(e)
	mt.timers, e = m.Int64Counter("rhizon.timers.fired", metric.WithDescription("Timers delivered by the engine."))
	check(e)
	mt.entries, e = m.Int64Counter("rhizon.entries.applied", metric.WithDescription("Raft log entries applied."))
	check(e)
	mt.batchSize, e = m.Int64Histogram("rhizon.batch.size", metric.WithDescription("Commands per proposed Raft entry."),
		metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096))
	check(e)
	mt.submitDur, e = m.Float64Histogram("rhizon.submit.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from Submit to the applied result on the leader."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
	check(e)
	// The two stages of rhizon.submit.duration, to tell waiting for the
	// entries in flight (pipelineBelow) from the entry's own Raft round trip.
	mt.queuedDur, e = m.Float64Histogram("rhizon.submit.queued.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a submitted command waits in the proposer queue before an entry takes it."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
	check(e)
	mt.entryDur, e = m.Float64Histogram("rhizon.entry.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from proposing an entry to its applied result on the leader: log write, replication, commit, apply."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
	check(e)
	mt.violations, e = m.Int64Counter("rhizon.violations", metric.WithDescription(
		"Security violations applied, by how the offender's audit stream took them: recorded (a new record), coalesced (a repeat within the window, counted on its record) or suppressed (over the rate limit, counted only)."))
	check(e)
	mt.diverged, e = m.Int64Counter("rhizon.shard.diverged", metric.WithDescription(
		"Replicas halted because their state hash differed from the leader's at the same index (divergence.go)."))
	check(e)
	mt.revisionMissing, e = m.Int64Counter("rhizon.shard.revision_missing", metric.WithDescription(
		"Replicas that stopped applying at an entry naming an actor revision this binary lacks, by actor_type and revision; they wait until restarted with one that has it."))
	check(e)
	mt.swept, e = m.Int64Counter("rhizon.retention.results_swept", metric.WithDescription(
		"Expired idempotency records deleted by retention sweep entries (retention.go)."))
	check(e)
	mt.historySwept, e = m.Int64Counter("rhizon.retention.history_swept", metric.WithDescription(
		"History records (events, recorded rejections) deleted by history retention sweep entries (history_retention.go)."))
	check(e)
	mt.leaseRead = metric.WithAttributeSet(attribute.NewSet(shard, attribute.String("confirmed", "lease")))
	mt.roundRead = metric.WithAttributeSet(attribute.NewSet(shard, attribute.String("confirmed", "round")))
	mt.reads, e = m.Int64Counter("rhizon.reads.linearizable", metric.WithDescription("Linearizable reads served by this leader, by how its leadership was confirmed: lease (no heartbeat round) or round."))
	check(e)
	mt.overloaded, e = m.Int64Counter("rhizon.submit.overloaded", metric.WithDescription("Submits refused because the proposer queue was full."))
	check(e)
	return mt, err
}

// ResultKind is the "result" label of a command's outcome in the command
// counters (the shard's and the ingress's use the same names).
func ResultKind(r *actor.Result) string {
	switch {
	case r.Duplicate:
		return "duplicate"
	case r.Replay:
		return "replay"
	case r.Status == actor.StatusAccepted:
		return "accepted"
	}
	return r.Reason.String()
}

func (m *metrics) applied(out engine.Applied) {
	ctx := context.Background()
	m.entries.Add(ctx, 1, m.shardAttr)
	if out.ResultsSwept > 0 {
		m.swept.Add(ctx, int64(out.ResultsSwept), m.shardAttr)
	}
	if out.HistorySwept > 0 {
		m.historySwept.Add(ctx, int64(out.HistorySwept), m.shardAttr)
	}
	if out.TimersFired > 0 {
		m.timers.Add(ctx, int64(out.TimersFired), m.shardAttr)
	}
	if out.Violations > 0 {
		recorded := out.Violations - out.ViolationsCoalesced - out.ViolationsSuppressed
		for _, v := range [...]struct {
			how string
			n   int
		}{{"recorded", recorded}, {"coalesced", out.ViolationsCoalesced}, {"suppressed", out.ViolationsSuppressed}} {
			if v.n > 0 {
				m.violations.Add(ctx, int64(v.n), m.shardAttr, metric.WithAttributes(attribute.String("audit", v.how)))
			}
		}
	}
	// Count per kind first: one Add per kind, not per command.
	var kinds []string
	var counts []int64
	for i := range out.Results {
		k := ResultKind(&out.Results[i])
		j := 0
		for j < len(kinds) && kinds[j] != k {
			j++
		}
		if j == len(kinds) {
			kinds, counts = append(kinds, k), append(counts, 0)
		}
		counts[j]++
	}
	for j, k := range kinds {
		if opt, ok := m.byKind[k]; ok {
			m.commands.Add(ctx, counts[j], opt)
			continue
		}
		// A reason added later and not listed in newMetrics.
		m.commands.Add(ctx, counts[j], m.shardAttr, metric.WithAttributes(attribute.String("result", k)))
	}
}

func (m *metrics) missingRevision(actorType, rev string) {
	m.revisionMissing.Add(context.Background(), 1, m.shardAttr,
		metric.WithAttributes(attribute.String("actor_type", actorType), attribute.String("revision", rev)))
}

func (m *metrics) batch(n int) { m.batchSize.Record(context.Background(), int64(n), m.shardAttr) }

// read counts one linearizable read, confirmed by the lease or a round.
func (m *metrics) read(leased bool) {
	if leased {
		m.reads.Add(context.Background(), 1, m.leaseRead)
	} else {
		m.reads.Add(context.Background(), 1, m.roundRead)
	}
}

func (m *metrics) submitted(ctx context.Context, d time.Duration, err error) {
	opt := m.okAttr
	if err != nil {
		opt = m.fail
	}
	m.submitDur.Record(ctx, d.Seconds(), opt)
}
