package natsserver

import (
	"testing"
	"time"
)

// Every JetStream write is synced unless a sync interval is given; with one,
// the server syncs on that interval (not NATS's default of two minutes).
func TestStartEmbedded_SyncsEveryWriteUnlessAnIntervalIsGiven(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		always   bool
	}{{0, true}, {100 * time.Millisecond, false}} {
		s, err := StartEmbedded(EmbeddedConfig{ServerName: "s", Addr: "127.0.0.1:0", StoreDir: t.TempDir(), SyncInterval: tc.interval})
		if err != nil {
			t.Fatal(err)
		}
		jc := s.JetStreamConfig()
		s.Shutdown()
		if jc == nil {
			t.Fatal("no JetStream")
		}
		if jc.SyncAlways != tc.always || (tc.interval > 0 && jc.SyncInterval != tc.interval) {
			t.Fatalf("SyncInterval %v: server syncs always=%v every %v; want always=%v", tc.interval, jc.SyncAlways, jc.SyncInterval, tc.always)
		}
	}
}
