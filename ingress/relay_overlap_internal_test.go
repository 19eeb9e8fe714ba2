package ingress

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/storage"
)

// outboxShard holds fixed outbox rows for the relay and accepts every
// progress record.
type outboxShard struct {
	unrecordingShard
	rows []storage.OutboxRow
}

func (s *outboxShard) Outbox(after engine.Position, limit int) ([]storage.OutboxRow, error) {
	var out []storage.OutboxRow
	for _, r := range s.rows {
		if r.Pos.After(after) && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *outboxShard) AckRelayed(context.Context, engine.Position) error { return nil }

// With atomic event batches, a page's commands are published beside its
// events, not after them: a saga's next hop waits for one round trip, not
// two. Seen from outside: while the events stream cannot take the page's
// event (deleted here), its command still reaches the ingress stream. The
// page is retried until the event is published too; the command's
// publications are deduplicated by its message id.
func TestRelay_CommandsDoNotWaitForTheEvents(t *testing.T) {
	m := startReplicatedManager(t)
	if !m.atomicEvents.Load() {
		t.Fatal("the replicated events stream takes no atomic batches: this test needs them")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := m.js.DeleteStream(ctx, stream.EventsStream); err != nil {
		t.Fatal(err)
	}
	addr := &pb.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityId: "c"}
	ev, err := proto.Marshal(&pb.Event{Id: "e1", Type: "evt.counter.added", Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := proto.Marshal(&pb.Command{Id: "c1", Type: "cmd.counter.add", IdempotencyKey: "k1", Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	sh := &outboxShard{unrecordingShard: unrecordingShard{wake: make(chan struct{})}, rows: []storage.OutboxRow{
		{Pos: engine.Position{Index: 1, Ordinal: 0}, Data: append([]byte{engine.OutboxEvent}, ev...)},
		{Pos: engine.Position{Index: 1, Ordinal: 1}, Data: append([]byte{engine.OutboxCommand}, cmd...)},
	}}
	runRelay(t, m, sh)
	ingress, err := m.js.Stream(ctx, stream.IngressStream)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Poll{Timeout: 20 * time.Second, Every: 50 * time.Millisecond}.Eventually(t, "the command on the ingress stream while the events stream is gone", func() (bool, string) {
		info, err := ingress.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 1, fmt.Sprintf("%d messages", info.State.Msgs)
	})
}

// To a replicated ingress stream the relay publishes a page's Sends in one
// atomic batch: one round trip and one replicated proposal, where waves
// took one round trip per repeated target. Three Sends to one entity are
// stored in their order, each with the batch's headers.
func TestRelay_SendsGoInOneAtomicBatch(t *testing.T) {
	m := startReplicatedManager(t)
	if !m.atomicIngress.Load() {
		t.Fatal("the replicated ingress stream takes no atomic batches")
	}
	addr := &pb.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityId: "c"}
	sh := &outboxShard{unrecordingShard: unrecordingShard{wake: make(chan struct{})}}
	for i := range 3 {
		cmd, err := proto.Marshal(&pb.Command{Id: fmt.Sprint("c", i), Type: "cmd.counter.add", IdempotencyKey: fmt.Sprint("k", i), Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		sh.rows = append(sh.rows, storage.OutboxRow{Pos: engine.Position{Index: 1, Ordinal: uint32(i)}, Data: append([]byte{engine.OutboxCommand}, cmd...)})
	}
	runRelay(t, m, sh)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ingress, err := m.js.Stream(ctx, stream.IngressStream)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Poll{Timeout: 20 * time.Second, Every: 50 * time.Millisecond}.Eventually(t, "the three Sends stored", func() (bool, string) {
		info, err := ingress.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 3, fmt.Sprintf("%d messages", info.State.Msgs)
	})
	info, err := ingress.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(3) {
		msg, err := ingress.GetMsg(ctx, info.State.FirstSeq+i)
		if err != nil {
			t.Fatal(err)
		}
		var c pb.Command
		if err := proto.Unmarshal(msg.Data, &c); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("c", i); c.Id != want {
			t.Errorf("message %d is %s, want %s", i, c.Id, want)
		}
		if msg.Header.Get("Nats-Batch-Id") == "" {
			t.Errorf("message %d was not published in an atomic batch (headers %v)", i, msg.Header)
		}
	}
}

// A Send the relay published in an atomic batch to the wrong shard's
// subject is forwarded without the batch's headers: with them, alone, it
// would be refused as a broken batch and never apply.
func TestConsume_ForwardsABatchedSendWithoutItsBatchHeaders(t *testing.T) {
	owner := &appliedShard{id: 0, keys: map[string]bool{}}
	other := &appliedShard{id: 1, keys: map[string]bool{}}
	nc, _ := startConsumers(t, []Shard{owner, other}, func(actor.Address) uint32 { return 0 })
	const batch = "b1"
	for i, key := range []string{"k1", "k2"} {
		// k1 on its entity's shard's subject; k2 on shard 1's, from where
		// it is forwarded alone: the second message of a batch.
		msg := ingressMsg(t, uint32(i), "x", key)
		msg.Header.Set("Nats-Msg-Id", key)
		msg.Header.Set("Nats-Batch-Id", batch)
		msg.Header.Set("Nats-Batch-Sequence", fmt.Sprint(i+1))
		if i == 0 {
			if err := nc.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
			continue
		}
		msg.Header.Set("Nats-Batch-Commit", "1")
		resp, err := nc.RequestMsg(msg, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(resp.Data), `"count":2`) {
			t.Fatalf("batch not stored: %s", resp.Data)
		}
	}
	testkit.Poll{Timeout: 30 * time.Second, Every: 50 * time.Millisecond}.Eventually(t, "both Sends applied on their shard", func() (bool, string) {
		return owner.applied("k1") && owner.applied("k2"), fmt.Sprintf("k1 %v, k2 %v", owner.applied("k1"), owner.applied("k2"))
	})
}

// startReplicatedManager is a manager over a 3-server NATS cluster, so its
// streams are replicated (atomic batches need that here), with no shards.
func startReplicatedManager(t *testing.T) *Manager {
	t.Helper()
	_, urls := startNATSCluster(t)
	nc, err := nats.Connect(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return startManager(t, Config{Conn: nc, Replicas: 3, Registry: builtin.Registry(), RelayAckInterval: 50 * time.Millisecond,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }}, 60*time.Second)
}

// runRelay runs the outbox relay of sh until the test ends.
func runRelay(t *testing.T, m *Manager, sh Shard) {
	t.Helper()
	w := &worker{m: m, sh: sh, log: m.log}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.relay(rctx) }()
	t.Cleanup(func() { stop(); <-done })
}
