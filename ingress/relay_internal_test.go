package ingress

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// unrecordingShard holds one event row for the relay and refuses every
// progress record at once, as a shard that just lost its leadership does.
type unrecordingShard struct {
	row     storage.OutboxRow
	records atomic.Int32
	wake    chan struct{}
}

func (s *unrecordingShard) ID() uint32     { return 0 }
func (s *unrecordingShard) IsLeader() bool { return true }
func (s *unrecordingShard) Submit(context.Context, actor.Command) (actor.Result, error) {
	return actor.Result{}, errors.New("not used")
}

func (s *unrecordingShard) Outbox(after engine.Position, _ int) ([]storage.OutboxRow, error) {
	if s.row.Pos.After(after) {
		return []storage.OutboxRow{s.row}, nil
	}
	return nil, nil
}

func (s *unrecordingShard) AckRelayed(context.Context, engine.Position) error {
	s.records.Add(1)
	return errors.New("not leader")
}

func (s *unrecordingShard) Outboxed() <-chan struct{} { return s.wake }

// A record that fails at once is retried after RelayAckInterval, as a
// successful one is: the relay must not spin while leadership moves.
func TestRelay_AFailedRecordIsRetriedAfterTheInterval(t *testing.T) {
	nc := startNATS(t)
	const interval = 50 * time.Millisecond
	m := startManager(t, Config{Conn: nc, Registry: builtin.Registry(), RelayAckInterval: interval,
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }}, 20*time.Second)
	ev := &pb.Event{Id: "e1", Type: "evt.counter.added", Address: &pb.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityId: "c"}}
	data, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	sh := &unrecordingShard{row: storage.OutboxRow{Pos: engine.Position{Index: 1}, Data: append([]byte{engine.OutboxEvent}, data...)}, wake: make(chan struct{})}
	w := &worker{m: m, sh: sh, log: m.log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.relay(ctx) }()
	const window = 600 * time.Millisecond
	time.Sleep(window) // attempts are counted over a duration: not a wait for a state
	cancel()
	<-done
	// One attempt per interval, plus slack for the first one.
	if n, most := sh.records.Load(), int32(window/interval)+2; n < 1 || n > most {
		t.Fatalf("%d record attempts in %v with a %v interval; want 1 to %d", n, window, interval, most)
	}
}

// The relay publishes events in atomic batches to a replicated events stream
// and in waves to a stream of one file-stored replica, where nats-server
// would stage each batch in a new file store.
func TestManager_AtomicBatchesOnlyToAReplicatedEventsStream(t *testing.T) {
	clustered := func(t *testing.T) *nats.Conn {
		_, urls := startNATSCluster(t)
		nc, err := nats.Connect(urls[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	for _, c := range []struct {
		name     string
		connect  func(*testing.T) *nats.Conn
		replicas int
		events   int // EventsReplicas; 0: as replicas
		want     bool
	}{
		{"one replica", startNATS, 1, 0, false},
		{"three replicas", clustered, 3, 0, true},
		{"three replicas, events on one", clustered, 3, 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc := c.connect(t)
			m := startManager(t, Config{Conn: nc, Replicas: c.replicas, EventsReplicas: c.events, Registry: builtin.Registry(),
				ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }}, 60*time.Second)
			if got := m.atomicEvents.Load(); got != c.want {
				t.Fatalf("atomic batches to the events stream of %d replicas: %v, want %v", c.replicas, got, c.want)
			}
			wantEvents := c.events
			if wantEvents == 0 {
				wantEvents = c.replicas
			}
			// The default --events-fsync async: JetStream's async persist
			// mode where a stream may have it (one replica), else the
			// server's own (a replicated stream cannot choose).
			wantMode := jetstream.DefaultPersistMode
			if wantEvents == 1 {
				wantMode = jetstream.AsyncPersistMode
			}
			if st, err := m.js.Stream(context.Background(), stream.EventsStream); err != nil || st.CachedInfo().Config.PersistMode != wantMode {
				t.Errorf("events stream of %d replicas: persist mode %v (%v), want %v", wantEvents, st.CachedInfo().Config.PersistMode, err, wantMode)
			}
			for name, want := range map[string]int{stream.EventsStream: wantEvents, stream.IngressStream: c.replicas} {
				st, err := m.js.Stream(context.Background(), name)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.CachedInfo().Config.Replicas; got != want {
					t.Errorf("%s has %d replicas, want %d", name, got, want)
				}
			}
		})
	}
}

func TestAtomicBatches(t *testing.T) {
	for _, c := range []struct {
		cfg  jetstream.StreamConfig
		want bool
	}{
		{jetstream.StreamConfig{AllowAtomicPublish: true, Replicas: 3, Storage: jetstream.FileStorage}, true},
		{jetstream.StreamConfig{AllowAtomicPublish: true, Replicas: 1, Storage: jetstream.FileStorage}, false},
		{jetstream.StreamConfig{AllowAtomicPublish: true, Replicas: 1, Storage: jetstream.MemoryStorage}, true},
		{jetstream.StreamConfig{AllowAtomicPublish: false, Replicas: 3, Storage: jetstream.FileStorage}, false}, // a server before 2.12
	} {
		if got := atomicBatches(c.cfg); got != c.want {
			t.Errorf("atomicBatches(replicas %d, %v, allow %v) = %v, want %v",
				c.cfg.Replicas, c.cfg.Storage, c.cfg.AllowAtomicPublish, got, c.want)
		}
	}
}
