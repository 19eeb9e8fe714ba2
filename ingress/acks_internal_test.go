package ingress

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
)

// gatedShard applies a command once the test opens its key's gate (keys
// without a gate apply at once).
type gatedShard struct {
	appliedShard
	gates map[string]chan struct{}
}

func (s *gatedShard) Submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	if g, ok := s.gates[cmd.IdempotencyKey]; ok {
		select {
		case <-g:
		case <-ctx.Done():
			return actor.Result{}, ctx.Err()
		}
	}
	return s.appliedShard.Submit(ctx, cmd)
}

// startAckTest starts one server and a manager for sh that holds acks for
// ackInterval, and records the arrival of every ack of the ingress stream.
func startAckTest(t *testing.T, sh Shard, ackInterval time.Duration) (*nats.Conn, *Manager, func() []time.Time) {
	t.Helper()
	nc := startNATS(t)
	var mu sync.Mutex
	var acks []time.Time
	sub, err := nc.Subscribe("$JS.ACK."+stream.IngressStream+".>", func(m *nats.Msg) {
		if string(m.Data) == "+ACK" || len(m.Data) == 0 {
			mu.Lock()
			acks = append(acks, time.Now())
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	sec := actor.Security{Principal: actor.Principal{ID: "p", Type: actor.PrincipalService},
		Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}
	m := startManager(t, Config{Conn: nc, Registry: builtin.Registry(), AckInterval: ackInterval,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return []Shard{sh} },
		Authenticate: func(string) (actor.Security, error) { return sec, nil }}, 20*time.Second)
	return nc, m, func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), acks...)
	}
}

// Commands applied a while apart, within one ack interval, are acked
// together: each ack is a proposal to the consumer's and, for the work-queue
// removal, the stream's Raft groups, and proposals that arrive together share
// an append entry. Sent as each command applied, they arrived apart.
func TestAcks_CommandsAppliedApartAreAckedTogether(t *testing.T) {
	gate := make(chan struct{})
	sh := &gatedShard{appliedShard: appliedShard{keys: map[string]bool{}}, gates: map[string]chan struct{}{"k2": gate}}
	nc, _, acks := startAckTest(t, sh, 3*time.Second)
	// Two entities: two lanes, so k2 waiting does not hold k1 back.
	for _, m := range []*nats.Msg{ingressMsg(t, 0, "e1", "k1"), ingressMsg(t, 0, "e2", "k2")} {
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 10*time.Second, "k1 applied", func() (bool, string) { return sh.applied("k1"), "not yet" })
	// k2 applies well after k1: acked one by one, their acks arrive as far apart.
	const apart = 500 * time.Millisecond
	k1 := time.Now()
	<-time.After(apart)
	close(gate)
	testkit.Eventually(t, 10*time.Second, "both commands acked", func() (bool, string) {
		got := acks()
		return len(got) >= 2, fmt.Sprintf("%d acks", len(got))
	})
	got := acks()
	if gap := got[1].Sub(got[0]); gap > 200*time.Millisecond {
		t.Fatalf("acks of commands applied %v apart arrived %v apart; want them sent together", apart, gap)
	}
	if d := got[0].Sub(k1); d < apart {
		t.Fatalf("first ack arrived %v after k1 applied, before k2 had: not held", d)
	}
}

// Acks still held when the worker stops are sent: otherwise every command
// applied in the last interval before a leader change or a shutdown would be
// delivered again (to be answered from its idempotency record).
func TestAcks_HeldAcksAreSentWhenTheWorkerStops(t *testing.T) {
	sh := &appliedShard{keys: map[string]bool{}}
	nc, m, acks := startAckTest(t, sh, time.Hour)
	if err := nc.PublishMsg(ingressMsg(t, 0, "e1", "k1")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "k1 applied", func() (bool, string) { return sh.applied("k1"), "not yet" })
	if n := len(acks()); n != 0 {
		t.Fatalf("%d acks sent within an ack interval of an hour", n)
	}
	m.Close()
	testkit.Eventually(t, 10*time.Second, "k1 acked after the worker stopped", func() (bool, string) {
		return len(acks()) == 1, fmt.Sprintf("%d acks", len(acks()))
	})
	js, _ := jetstream.New(nc)
	testkit.EventuallyNil(t, 10*time.Second, "the ingress stream empty (work-queue removal)", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream.IngressStream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d messages left", info.State.Msgs)
		}
		return nil
	})
}
