package ingress

import (
	"context"
	"fmt"
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
	_, urls := startNATSCluster(t)
	nc, err := nats.Connect(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	m := startManager(t, Config{Conn: nc, Replicas: 3, Registry: builtin.Registry(), RelayAckInterval: 50 * time.Millisecond,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }}, 60*time.Second)
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
	w := &worker{m: m, sh: sh, log: m.log}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.relay(rctx) }()
	defer func() { stop(); <-done }()
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
