package ingress

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// growingOutbox is a leader's outbox that the test adds Sends to while the
// relay runs.
type growingOutbox struct {
	unrecordingShard
	mu       sync.Mutex
	rows     []storage.OutboxRow
	recorded engine.Position // the relay's last progress record
	lastRead engine.Position // the last row the relay read
}

func (s *growingOutbox) Outbox(after engine.Position, limit int) ([]storage.OutboxRow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storage.OutboxRow
	for _, r := range s.rows {
		if r.Pos.After(after) && len(out) < limit {
			out = append(out, r)
			s.lastRead = r.Pos
		}
	}
	return out, nil
}

func (s *growingOutbox) read() engine.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastRead
}

// event adds an event of entity c, in an entry of its own.
func (s *growingOutbox) event(t *testing.T, id string) engine.Position {
	t.Helper()
	data, err := proto.Marshal(&pb.Event{Id: id, Type: "evt.counter.added", Address: &pb.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityId: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	return s.add(append([]byte{engine.OutboxEvent}, data...))
}

func (s *growingOutbox) add(data []byte) engine.Position {
	s.mu.Lock()
	pos := engine.Position{Index: uint64(len(s.rows) + 1)}
	s.rows = append(s.rows, storage.OutboxRow{Pos: pos, Data: data})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return pos
}

func (s *growingOutbox) AckRelayed(_ context.Context, pos engine.Position) error {
	s.mu.Lock()
	s.recorded = pos
	s.mu.Unlock()
	return nil
}

func (s *growingOutbox) progress() engine.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recorded
}

// send adds a Send of command id to entity c, in an entry of its own.
func (s *growingOutbox) send(t *testing.T, id string) engine.Position { return s.sendTo(t, "c", id) }

// sendTo adds a Send of command id to entity, in an entry of its own.
func (s *growingOutbox) sendTo(t *testing.T, entity, id string) engine.Position {
	t.Helper()
	addr := &pb.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityId: entity}
	data, err := proto.Marshal(&pb.Command{Id: id, Type: "cmd.counter.add", IdempotencyKey: "k-" + id, Address: addr, Payload: []byte(`{"amount":1}`),
		Principal: &pb.Principal{Id: "sender", Type: string(actor.PrincipalService)}})
	if err != nil {
		t.Fatal(err)
	}
	return s.add(append([]byte{engine.OutboxCommand}, data...))
}

// target is the Send's target shard's leader as the relay reaches it
// directly: up or not, and what it applied, in order.
type target struct {
	mu      sync.Mutex
	down    bool
	applied []string
	hold    chan struct{} // when set, a Send to entity "slow" waits for it
}

func (tg *target) submit(ctx context.Context, cmd actor.Command) (actor.Result, error) {
	tg.mu.Lock()
	hold := tg.hold
	tg.mu.Unlock()
	if hold != nil && cmd.Address.EntityID == "slow" {
		select {
		case <-hold:
		case <-ctx.Done():
			return actor.Result{}, fmt.Errorf("%w: %v", shard.ErrUnknownOutcome, ctx.Err())
		}
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if tg.down {
		return actor.Result{}, fmt.Errorf("%w: no leader", shard.ErrNotLeader)
	}
	tg.applied = append(tg.applied, cmd.ID)
	return actor.Result{Status: actor.StatusAccepted}, nil
}

func (tg *target) set(down bool) { tg.mu.Lock(); tg.down = down; tg.mu.Unlock() }

func (tg *target) got() []string { tg.mu.Lock(); defer tg.mu.Unlock(); return slices.Clone(tg.applied) }

// A target entity's Sends apply in the order they were sent, whichever way
// each goes: while Sends to its shard wait in the ingress stream (an earlier
// leader's, or one that failed to go direct), later ones follow them into
// the stream instead of overtaking them directly; once the shard's subject
// is drained (its leader applied and acked them), Sends go direct again.
func TestRelay_DirectSendsNeverOvertakeSendsInTheStream(t *testing.T) {
	nc := startNATS(t)
	tg := &target{}
	m := startManager(t, Config{Conn: nc, Registry: builtin.Registry(), RelayAckInterval: 50 * time.Millisecond,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }, Submit: tg.submit}, 20*time.Second)
	m.drainedEvery = time.Millisecond // every page asks: the test decides when the stream is drained
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ing, err := m.js.Stream(ctx, stream.IngressStream)
	if err != nil {
		t.Fatal(err)
	}
	// An earlier leader's relay published a Send that no leader applied yet.
	earlier, err := proto.Marshal(&pb.Command{Id: "earlier", Type: "cmd.counter.add", IdempotencyKey: "k-earlier",
		Address: &pb.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityId: "c"}, Payload: []byte(`{"amount":1}`),
		Principal: &pb.Principal{Id: "sender", Type: string(actor.PrincipalService)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.js.Publish(ctx, stream.IngressSubject(0), earlier); err != nil {
		t.Fatal(err)
	}
	inStream := func(want ...string) {
		t.Helper()
		testkit.Poll{Timeout: 20 * time.Second, Every: 50 * time.Millisecond}.Eventually(t, fmt.Sprintf("the stream holds %v", want), func() (bool, string) {
			var ids []string
			info, err := ing.Info(ctx)
			if err != nil {
				return false, err.Error()
			}
			for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
				msg, err := ing.GetMsg(ctx, seq)
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					continue
				} else if err != nil {
					return false, err.Error()
				}
				var c pb.Command
				if err := proto.Unmarshal(msg.Data, &c); err != nil {
					return false, err.Error()
				}
				ids = append(ids, c.Id)
			}
			return slices.Equal(ids, want), fmt.Sprintf("stream %v, applied directly %v", ids, tg.got())
		})
	}
	// The target's leader applies what waits in the stream.
	drain := func() {
		t.Helper()
		if err := ing.Purge(ctx); err != nil {
			t.Fatal(err)
		}
	}
	directly := func(want ...string) {
		t.Helper()
		testkit.Poll{Timeout: 20 * time.Second, Every: 50 * time.Millisecond}.Eventually(t, fmt.Sprintf("applied directly: %v", want), func() (bool, string) {
			got := tg.got()
			return slices.Equal(got, want), fmt.Sprint(got)
		})
	}

	sh := &growingOutbox{unrecordingShard: unrecordingShard{wake: make(chan struct{}, 1)}}
	runRelay(t, m, sh)
	sh.send(t, "c0")
	inStream("earlier", "c0")
	drain()
	sh.send(t, "c1")
	directly("c1")

	tg.set(true) // the target shard has no leader for a while
	sh.send(t, "c2")
	inStream("c2")
	tg.set(false)
	sh.send(t, "c3")
	inStream("c2", "c3")
	directly("c1")
	drain()
	sh.send(t, "c4")
	directly("c1", "c4")
	inStream()
}

// A Send waits only for the Sends before it to the same entity: one whose
// target commits slowly does not hold up a later Send to another entity (a
// page at a time, the later one waited for the page's slowest). The relay's
// recorded progress stays below the slow Send until it is delivered, so a
// new leader would deliver it again.
func TestRelay_ASlowSendHoldsUpNoOtherEntitysSends(t *testing.T) {
	nc := startNATS(t)
	tg := &target{hold: make(chan struct{})}
	m := startManager(t, Config{Conn: nc, Registry: builtin.Registry(), RelayAckInterval: 10 * time.Millisecond,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }, Submit: tg.submit}, 20*time.Second)
	sh := &growingOutbox{unrecordingShard: unrecordingShard{wake: make(chan struct{}, 1)}}
	runRelay(t, m, sh)
	slow := sh.sendTo(t, "slow", "s1")
	testkit.Poll{Timeout: 20 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "the slow Send on its way", func() (bool, string) {
		return sh.progress() == engine.Position{} && len(tg.got()) == 0, fmt.Sprint(sh.progress())
	})
	sh.sendTo(t, "fast", "f1")
	last := sh.sendTo(t, "fast", "f2")
	testkit.Poll{Timeout: 3 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "the later Sends to another entity applied", func() (bool, string) {
		got := tg.got()
		return slices.Equal(got, []string{"f1", "f2"}), fmt.Sprint(got)
	})
	if p := sh.progress(); !slow.After(p) {
		t.Fatalf("progress recorded at %v while the Send at %v is not delivered", p, slow)
	}
	close(tg.hold)
	testkit.Poll{Timeout: 20 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "all delivered and recorded", func() (bool, string) {
		got := tg.got()
		return slices.Equal(got, []string{"f1", "f2", "s1"}) && sh.progress() == last, fmt.Sprint(got, sh.progress())
	})
}

// Sends do not wait for the events of the pages before them: while a page's
// event cannot be published (its publication hangs here: the stream is gone
// and a subscriber that never answers takes the subject), a Send committed
// after it is delivered at once, not after the publication timed out. The
// relay's recorded progress stays before the event, which is published once
// the stream is back.
func TestRelay_SendsDoNotWaitForEarlierPagesEvents(t *testing.T) {
	nc := startNATS(t)
	tg := &target{}
	m := startManager(t, Config{Conn: nc, Registry: builtin.Registry(), RelayAckInterval: 10 * time.Millisecond,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }, Submit: tg.submit}, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.js.DeleteStream(ctx, stream.EventsStream); err != nil {
		t.Fatal(err)
	}
	mute, err := nc.SubscribeSync(stream.EventsPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	sh := &growingOutbox{unrecordingShard: unrecordingShard{wake: make(chan struct{}, 1)}}
	runRelay(t, m, sh)
	ev := sh.event(t, "e1")
	testkit.Poll{Timeout: 20 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "the event's page read", func() (bool, string) {
		return sh.read() == ev, fmt.Sprint(sh.read())
	})
	sh.send(t, "c1")
	// The publication waits 10 s for its ack; the Send must not.
	testkit.Poll{Timeout: 5 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "the later Send delivered while the event cannot be published", func() (bool, string) {
		got := tg.got()
		return slices.Equal(got, []string{"c1"}), fmt.Sprint(got)
	})
	if p := sh.progress(); p != (engine.Position{}) {
		t.Fatalf("progress recorded at %v: the event at %v is not published", p, ev)
	}
	if err := mute.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := m.ensureEventsStream(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Poll{Timeout: 30 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "the event published and all recorded", func() (bool, string) {
		return sh.progress().Index == 2, fmt.Sprint(sh.progress())
	})
}
