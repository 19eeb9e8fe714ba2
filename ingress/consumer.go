package ingress

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
