package ingress

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/stream"
)

// --events-fsync always keeps RHIZON_EVENTS in JetStream's default persist
// mode (synced as the server syncs: always, on the embedded servers); an
// existing stream keeps the mode it was created with, which nats-server
// cannot change, instead of failing the node's start; a bad value is
// refused.
func TestManager_EventsFsyncSetting(t *testing.T) {
	nc := startNATS(t)
	cfg := func(sync string) Config {
		return Config{Conn: nc, Replicas: 1, EventsSync: sync, Registry: builtin.Registry(),
			ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return nil }}
	}
	mode := func(m *Manager) jetstream.PersistModeType {
		t.Helper()
		st, err := m.js.Stream(context.Background(), stream.EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.PersistMode
	}
	always := startManager(t, cfg(EventsSyncAlways), 30*time.Second)
	if got := mode(always); got != jetstream.DefaultPersistMode {
		t.Fatalf("--events-fsync always: persist mode %v, want default", got)
	}
	if always.atomicEvents.Load() {
		t.Fatal("atomic batches on a one-replica file stream")
	}
	// A node started later with async finds the stream and keeps its mode.
	later := startManager(t, cfg(EventsSyncAsync), 30*time.Second)
	if got := mode(later); got != jetstream.DefaultPersistMode {
		t.Fatalf("existing stream after a start with async: persist mode %v, want it kept (default)", got)
	}
	// Deleted, it is created again as this node's settings say: async.
	if err := later.js.DeleteStream(context.Background(), stream.EventsStream); err != nil {
		t.Fatal(err)
	}
	if err := later.ensureEventsStream(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := mode(later); got != jetstream.AsyncPersistMode {
		t.Fatalf("stream recreated by an async node: persist mode %v, want async", got)
	}
	if _, err := Start(cfg("sometimes")); err == nil {
		t.Fatal("events sync \"sometimes\" accepted")
	}
}
