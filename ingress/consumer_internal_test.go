package ingress

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
)

// A shard's consumer keeps its state in memory (no WAL write and fsync per
// ack), and one an earlier version created on file is replaced: the message
// that consumer had delivered and not acknowledged (its node died) is
// delivered again by the new one at once, and applies.
func TestConsume_AFileStoredConsumerIsReplacedByAMemoryOne(t *testing.T) {
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subj := stream.IngressSubject(0)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream.IngressStream, Subjects: []string{subj},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	// The consumer as the earlier version created it, with a message taken
	// and never acknowledged: redelivered only after its AckWait.
	old, err := js.CreateOrUpdateConsumer(ctx, stream.IngressStream, jetstream.ConsumerConfig{Durable: "shard-0",
		FilterSubject: subj, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour, MaxDeliver: -1,
		MaxAckPending: 8192, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, ingressMsg(t, 0, "e1", "k1")); err != nil {
		t.Fatal(err)
	}
	batch, err := old.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	if info, err := old.Info(ctx); err != nil || info.NumAckPending != 1 {
		t.Fatalf("old consumer: %v pending, err %v; want the message taken and not acknowledged", info.NumAckPending, err)
	}

	sh := &appliedShard{keys: map[string]bool{}}
	sec := actor.Security{Principal: actor.Principal{ID: "p", Type: actor.PrincipalService},
		Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}
	startManager(t, Config{Conn: nc, Registry: builtin.Registry(),
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return []Shard{sh} },
		Authenticate: func(string) (actor.Security, error) { return sec, nil }}, 20*time.Second)
	testkit.Eventually(t, 15*time.Second, "the message the old consumer held applied", func() (bool, string) {
		return sh.applied("k1"), "not yet"
	})
	cons, err := js.Consumer(ctx, stream.IngressStream, "shard-0")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Config.MemoryStorage {
		t.Fatal("the shard's consumer keeps its state on file; want memory")
	}
	if _, err := js.PublishMsg(ctx, ingressMsg(t, 0, "e1", "k2")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "a new message applied", func() (bool, string) {
		return sh.applied("k2"), "not yet"
	})
}

// slowShard takes its time over each submit and counts them by key.
type slowShard struct {
	appliedShard
	took  time.Duration
	calls map[string]int
}

func (s *slowShard) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	s.mu.Lock()
	s.calls[cmd.IdempotencyKey]++
	s.mu.Unlock()
	select { // a slow apply, not the test waiting for something
	case <-time.After(s.took):
	case <-ctx.Done():
		return actor.Result{}, ctx.Err()
	}
	return s.appliedShard.Submit(ctx, cmd)
}

// A submit that takes several AckWaits is kept alive: JetStream does not
// deliver the message again meanwhile, so it is submitted once.
func TestConsume_ASlowSubmitIsNotRedelivered(t *testing.T) {
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	const ackWait = time.Second
	sh := &slowShard{appliedShard: appliedShard{keys: map[string]bool{}}, took: 3*ackWait + ackWait/2, calls: map[string]int{}}
	sec := actor.Security{Principal: actor.Principal{ID: "p", Type: actor.PrincipalService},
		Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}
	startManager(t, Config{Conn: nc, Registry: builtin.Registry(), AckWait: ackWait,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return []Shard{sh} },
		Authenticate: func(string) (actor.Security, error) { return sec, nil }}, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, k := range []string{"k1", "k2"} { // two entities: two lanes at once
		if _, err := js.PublishMsg(ctx, ingressMsg(t, 0, k, k)); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 20*time.Second, "both applied and acknowledged", func() (bool, string) {
		cons, err := js.Consumer(ctx, stream.IngressStream, "shard-0")
		if err != nil {
			return false, err.Error()
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		done := sh.applied("k1") && sh.applied("k2") && info.NumAckPending == 0 && info.NumPending == 0
		return done, fmt.Sprintf("ack pending %d, pending %d", info.NumAckPending, info.NumPending)
	})
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.calls["k1"] != 1 || sh.calls["k2"] != 1 {
		t.Fatalf("submits by key %v; want one each: a message in progress was delivered again", sh.calls)
	}
}
