package ingress

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// relayPage is how many outbox rows the relay reads at a time.
const relayPage = 1024

// relay publishes the shard's committed outbox rows: events to their entity's
// events subject (message id = event id), actors' Sends to the target shard's
// ingress subject (message id = the command's deterministic id). It records
// its progress in the Raft log (AckRelayed), so a new leader starts where the
// old one was known to have got; what was published in between is published
// again and dropped by JetStream's duplicate detection (or, for commands, by
// the engine's idempotency).
func (w *worker) relay(ctx context.Context) {
	var published, recorded engine.Position
	lastRecord := time.Now()
	for ctx.Err() == nil {
		rows, err := w.sh.Outbox(published, relayPage)
		if err == nil && len(rows) > 0 {
			err = w.publish(ctx, rows)
			if err == nil {
				published = rows[len(rows)-1].Pos
			}
		}
		w.m.metrics.backlog(w.sh.ID(), len(rows))
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("outbox relay: will retry", "err", err)
			}
			sleep(ctx, time.Second)
			continue
		}
		if published != recorded && time.Since(lastRecord) >= w.m.cfg.RelayAckInterval {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := w.sh.AckRelayed(actx, published)
			cancel()
			if err != nil {
				// Not leading any more, or the outcome is unknown: either
				// way the next attempt (here or on the next leader) covers it.
				w.log.Debug("outbox relay: record progress", "err", err)
			} else {
				recorded, lastRecord = published, time.Now()
			}
		}
		if len(rows) == relayPage {
			continue
		}
		// Wait for the next applied entry; the timeout records progress
		// (and covers a signal taken before the rows were read).
		select {
		case <-ctx.Done():
		case <-w.sh.Outboxed():
		case <-time.After(w.m.cfg.RelayAckInterval):
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

type outMsg struct {
	key string // per-key order: events by entity, commands by target entity
	msg *nats.Msg
	id  string
}

// publish sends rows in waves: a wave holds at most one message per entity
// and is published asynchronously; the next wave starts when every message
// of this one is stored. So a failure can never leave a later event of an
// entity stored before an earlier one, and the common case (many entities)
// is one pipelined wave.
func (w *worker) publish(ctx context.Context, rows []storage.OutboxRow) error {
	pending := make([]outMsg, 0, len(rows))
	for _, r := range rows {
		om, err := w.outMsg(r)
		if err != nil {
			// Rows are written by the engine; one that does not decode is a
			// bug, and skipping it silently would lose an event.
			return fmt.Errorf("outbox row %v: %w", r.Pos, err)
		}
		pending = append(pending, om)
	}
	for len(pending) > 0 {
		seen := make(map[string]bool, len(pending))
		var wave, rest []outMsg
		for _, om := range pending {
			if seen[om.key] {
				rest = append(rest, om)
				continue
			}
			seen[om.key] = true
			wave = append(wave, om)
		}
		futures := make([]jetstream.PubAckFuture, 0, len(wave))
		for _, om := range wave {
			f, err := w.m.js.PublishMsgAsync(om.msg, jetstream.WithMsgID(om.id))
			if err != nil {
				return fmt.Errorf("publish %s: %w", om.msg.Subject, err)
			}
			futures = append(futures, f)
		}
		timeout := time.After(10 * time.Second)
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				w.m.metrics.published(ctx, w.sh.ID(), ack.Duplicate)
			case err := <-f.Err():
				return fmt.Errorf("publish %s: %w", wave[i].msg.Subject, err)
			case <-timeout:
				return fmt.Errorf("publish %s: no ack within 10s", wave[i].msg.Subject)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		pending = rest
	}
	return nil
}

func (w *worker) outMsg(r storage.OutboxRow) (outMsg, error) {
	if len(r.Data) == 0 {
		return outMsg{}, fmt.Errorf("empty row")
	}
	body := r.Data[1:]
	switch r.Data[0] {
	case engine.OutboxEvent:
		var ev pb.Event
		if err := proto.Unmarshal(body, &ev); err != nil {
			return outMsg{}, err
		}
		addr := ev.Address.ToActor()
		m := nats.NewMsg(EventSubject(addr))
		m.Data = body
		m.Header.Set("Rhizon-Event-Type", ev.Type)
		return outMsg{key: "e" + string(addr.Key()), msg: m, id: ev.Id}, nil
	case engine.OutboxCommand:
		var c pb.Command
		if err := proto.Unmarshal(body, &c); err != nil {
			return outMsg{}, err
		}
		addr := c.Address.ToActor()
		m := nats.NewMsg(IngressSubject(w.m.cfg.ShardOf(addr)))
		m.Data = body
		m.Header.Set(HeaderSignature, w.m.sign(body))
		return outMsg{key: "c" + string(addr.Key()), msg: m, id: idempotencyMsgID(addr, c.IdempotencyKey)}, nil
	}
	return outMsg{}, fmt.Errorf("unknown row kind %q", r.Data[0])
}
