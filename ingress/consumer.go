package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consumerConfig is the durable consumer of one shard on one ingress stream.
//
// Its state (ack floor, pending, delivery counts) is kept in memory, on each
// of its replicas, and replicated through a Raft group of its own that is in
// memory too: on the file store every ack cost a WAL write and an fsync on
// each replica, and the state file was rewritten and fsynced up to 10 times a
// second per replica (a third of n1's nats-server fsyncs in the ingress
// benchmark). The messages themselves stay in the file-stored, replicated
// stream. Why that keeps exactly-once effect: losing the consumer's state (all
// of its replicas restarting at once) only moves it back to the first message
// still in the stream; work-queue retention removed every message acked
// before, and a message whose removal was lost too is delivered again, which
// the engine answers from the stored result of its idempotency key (a key
// derived from the stream sequence when the producer set none). Per-entity
// order holds the same way: a redelivered command that already applied is a
// replay, not a second effect. One replica restarting catches up from the
// others, as with the file store; a majority restarting at once may elect a
// leader without the state, which is the case above. The cost is
// redeliveries after such a restart, never a lost or doubled command.
func (w *worker) consumerConfig(src source) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       "shard-" + strconv.FormatUint(uint64(src.shard), 10), // the carried shard's, one per subject
		Description:   "Rhizon shard leader's ingress consumer",
		FilterSubject: src.subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.m.cfg.AckWait,
		MaxDeliver:    -1, // the worker dead-letters by its own rule
		MaxAckPending: 8192,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MemoryStorage: true,
	}
}

// bindConsumer creates or updates the shard's consumer on src. A consumer
// created by an earlier version keeps its state on file, which nats-server
// refuses to change on an update: it is deleted and created again in memory.
// Its unacknowledged messages stay in the stream and the new consumer
// delivers them again (see consumerConfig for why that is safe).
func (w *worker) bindConsumer(ctx context.Context, src source) (jetstream.Consumer, error) {
	cfg := w.consumerConfig(src)
	cons, err := w.m.js.CreateOrUpdateConsumer(ctx, src.stream, cfg)
	if err == nil || !storageChangeRefused(err) {
		return cons, err
	}
	w.log.Info("ingress consumer moves its state to memory: deleting the file-stored one; its unacknowledged messages are delivered again",
		"stream", src.stream, "consumer", cfg.Durable)
	if err := w.m.js.DeleteConsumer(ctx, src.stream, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("delete file-stored consumer %s: %w", cfg.Durable, err)
	}
	return w.m.js.CreateOrUpdateConsumer(ctx, src.stream, cfg)
}

// storageChangeRefused tells nats-server's answer to an update that changes
// a consumer's storage type.
func storageChangeRefused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "storage type can not be updated")
}

// leadHere moves the leadership of cons to the NATS server this node is
// connected to, when another of its replicas leads it. The consumer's leader
// is where every message is delivered from and every ack goes to: led
// elsewhere, each command crosses a route twice more (its delivery, then its
// ack), which cost both servers a route write and parse per message. Nothing
// depends on it: when the server refuses (this node's server is not one of
// the consumer's replicas, as on an external cluster) or the move does not
// happen in time, the worker pulls from wherever the leader is.
func (w *worker) leadHere(ctx context.Context, src source, cons jetstream.Consumer) {
	here := w.m.cfg.Conn.ConnectedServerName()
	info, err := cons.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == here ||
		!slices.ContainsFunc(info.Cluster.Replicas, func(p *jetstream.PeerInfo) bool { return p.Name == here }) {
		return
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": here}})
	subj := "$JS.API.CONSUMER.LEADER.STEPDOWN." + src.stream + "." + info.Name
	resp, err := w.m.cfg.Conn.RequestWithContext(ctx, subj, req)
	if err != nil {
		w.log.Debug("ingress consumer stays led elsewhere", "stream", src.stream, "leader", info.Cluster.Leader, "err", err)
		return
	}
	var r struct {
		Error *jetstream.APIError `json:"error"`
	}
	if json.Unmarshal(resp.Data, &r) != nil || r.Error != nil {
		w.log.Debug("ingress consumer stays led elsewhere", "stream", src.stream, "leader", info.Cluster.Leader, "err", r.Error)
		return
	}
	// A pull sent while no server leads the consumer is lost without a word
	// (see pullMessages): wait for the new leader first, a while.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if info, err := cons.Info(ctx); err == nil && info.Cluster != nil && info.Cluster.Leader == here {
			w.log.Debug("ingress consumer led by this node's server", "stream", src.stream, "server", here)
			return
		}
		sleep(ctx, 20*time.Millisecond)
	}
}
