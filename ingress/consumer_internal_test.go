package ingress

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
)

var testSec = actor.Security{Principal: actor.Principal{ID: "p", Type: actor.PrincipalService},
	Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}

// A cluster of the work-queue layout moves over at start: RHIZON_INGRESS
// gives its subjects to RHIZON_COMMANDS (limits retention, starting after its
// last sequence), what was left in it is applied with the ids and keys it had
// there (a command that applied already is a replay, not a second effect),
// and it is deleted. What the old version had acked and removed is not
// applied again.
func TestConsume_AWorkQueueStreamIsMovedOver(t *testing.T) {
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subj := stream.IngressSubject(0)
	legacy, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: legacyIngressStream, Subjects: []string{subj},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	old, err := js.CreateOrUpdateConsumer(ctx, legacyIngressStream, jetstream.ConsumerConfig{Durable: "shard-0",
		FilterSubject: subj, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// seq 1 (k1) applied and acked by the old version; seq 2 (no key: its
	// key derives from the sequence) and seq 3 (k3) still there.
	for _, k := range []string{"k1", "", "k3"} {
		if _, err := js.PublishMsg(ctx, ingressMsg(t, 0, "e"+k, k)); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := old.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if info, err := legacy.Info(ctx); err != nil || info.State.Msgs != 2 || info.State.LastSeq != 3 {
		t.Fatalf("the old stream before the move: %+v, %v; want seqs 2 and 3 left", info.State, err)
	}

	sh := &appliedShard{keys: map[string]bool{}}
	startManager(t, Config{Conn: nc, Registry: builtin.Registry(),
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return []Shard{sh} },
		Authenticate: func(string) (actor.Security, error) { return testSec, nil }}, 20*time.Second)
	testkit.Eventually(t, 20*time.Second, "the old stream's messages applied and the stream deleted", func() (bool, string) {
		_, err := js.Stream(ctx, legacyIngressStream)
		return sh.applied("js/2") && sh.applied("k3") && errors.Is(err, jetstream.ErrStreamNotFound),
			fmt.Sprintf("applied js/2 %v, k3 %v; old stream: %v", sh.applied("js/2"), sh.applied("k3"), err)
	})
	if c, _ := sh.command("js/2"); c.ID != "js-2" {
		t.Errorf("the moved message without key applied as command %q; want js-2, its id on the old stream", c.ID)
	}
	if sh.applied("k1") {
		t.Error("a command the old version had applied and acked was applied again")
	}
	s, err := js.Stream(ctx, stream.IngressStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.LimitsPolicy || cfg.FirstSeq != 4 {
		t.Fatalf("%s: retention %v, first seq %d; want limits, 4 (after the old stream's last)", stream.IngressStream, cfg.Retention, cfg.FirstSeq)
	}
	// A new message derives its key from a sequence no old one had.
	if _, err := js.PublishMsg(ctx, ingressMsg(t, 0, "e4", "")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "a new message applied and the subject purged", func() (bool, string) {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			return false, err.Error()
		}
		n := info.State.Subjects[subj]
		return sh.applied("js/6") && n == 0, fmt.Sprintf("applied js/6 %v; %d messages on %s", sh.applied("js/6"), n, subj)
	})
}

// gatedShard applies every command at once except those whose key is held:
// their submits wait until the worker stops (like a leader that lost its
// shard in the middle of them).
type gatedShard struct {
	appliedShard
	held string
}

func (s *gatedShard) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	if cmd.IdempotencyKey == s.held {
		<-ctx.Done()
		return actor.Result{}, ctx.Err()
	}
	return s.appliedShard.Submit(ctx, cmd)
}

// The leader purges what it applied, and never past a message it has not
// finished: with one command stuck in its submit, the commands published
// before it are purged, it stays in the stream however many after it apply,
// and the next leader applies it.
func TestConsume_APurgeNeverPassesAnUnfinishedMessage(t *testing.T) {
	nc := startNATS(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := func(sh Shard) Config {
		return Config{Conn: nc, Registry: builtin.Registry(),
			ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return []Shard{sh} },
			Authenticate: func(string) (actor.Security, error) { return testSec, nil }}
	}
	first := &gatedShard{appliedShard: appliedShard{keys: map[string]bool{}}, held: "stuck"}
	m1 := startManager(t, cfg(first), 20*time.Second)
	var stuck uint64
	keys := []string{"a", "b", "stuck"}
	for i := range 20 {
		keys = append(keys, fmt.Sprintf("after-%d", i))
	}
	for _, k := range keys {
		ack, err := js.PublishMsg(ctx, ingressMsg(t, 0, "e-"+k, k))
		if err != nil {
			t.Fatal(err)
		}
		if k == "stuck" {
			stuck = ack.Sequence
		}
	}
	s, err := js.Stream(ctx, stream.IngressStream)
	if err != nil {
		t.Fatal(err)
	}
	present := func(seq uint64) bool {
		_, err := s.GetMsg(ctx, seq)
		return err == nil
	}
	// The entities' lanes differ except by chance; the ones in the stuck
	// command's lane wait behind it, the others apply.
	testkit.Eventually(t, 15*time.Second, "the commands before the stuck one applied and purged", func() (bool, string) {
		return first.applied("a") && first.applied("b") && !present(stuck-1) && !present(stuck-2),
			fmt.Sprintf("applied a %v, b %v; seqs %d, %d present %v, %v", first.applied("a"), first.applied("b"), stuck-2, stuck-1, present(stuck-2), present(stuck-1))
	})
	applied := 0
	testkit.Eventually(t, 15*time.Second, "most commands after the stuck one applied", func() (bool, string) {
		applied = 0
		for _, k := range keys[3:] {
			if first.applied(k) {
				applied++
			}
		}
		return applied >= 10, fmt.Sprintf("%d of %d applied", applied, len(keys)-3)
	})
	time.Sleep(20 * m1.cfg.PurgeInterval) // purges that would pass it, if any did
	if !present(stuck) {
		t.Fatalf("the stuck command (seq %d) was purged while unfinished, after %d later ones applied", stuck, applied)
	}
	m1.Close()
	// The stopped leader's consumer went with it (not after its inactivity
	// threshold).
	if n := len(consumerNames(ctx, t, s)); n != 0 {
		t.Fatalf("%d consumers left on the stream after the leader stopped; want 0", n)
	}

	next := &appliedShard{keys: map[string]bool{}}
	startManager(t, cfg(next), 20*time.Second)
	testkit.Eventually(t, 15*time.Second, "the next leader applied the stuck command and every message is purged", func() (bool, string) {
		info, err := s.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return next.applied("stuck") && info.State.Msgs == 0, fmt.Sprintf("stuck applied %v; %d messages in the stream", next.applied("stuck"), info.State.Msgs)
	})
	if next.applied("a") {
		t.Error("the next leader applied a command purged before it started")
	}
}

func consumerNames(ctx context.Context, t *testing.T, s jetstream.Stream) []string {
	t.Helper()
	var names []string
	l := s.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}
