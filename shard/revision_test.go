package shard_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/upgradetest"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

func upgradeAdd(id string) actor.Command {
	return actor.Command{
		ID: "cmd-" + id, Type: "cmd.upgrade.add", IdempotencyKey: "k-" + id,
		Address: actor.Address{Tenant: "t", Workspace: "w", ActorType: upgradetest.Type, EntityID: "e"},
		Payload: []byte(`{"amount":1}`), Security: user,
	}
}

// A replica whose binary lacks the revision an entry names waits: it applies
// nothing from that entry on, says why in its status, and takes no snapshot;
// restarted with a binary that has the revision it applies the entry, decided
// by that revision.
func TestShard_EntryOfAMissingRevisionWaitsUntilRestartedWithIt(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })

	dir := t.TempDir()
	tune := func(spec string) func(*shard.Config) {
		return func(c *shard.Config) {
			reg, err := actor.NewRegistry()
			if err != nil {
				t.Fatal(err)
			}
			if err := upgradetest.Register(reg, spec); err != nil {
				t.Fatal(err)
			}
			c.Registry = reg
			c.Revisions = func() map[string]string { return map[string]string{upgradetest.Type: "2"} }
		}
	}
	old := openReplica(t, dir, tune("upgrade@1"))
	before := old.s.Meta()
	_, err := old.s.Submit(ctx(t), upgradeAdd("a"))
	if !errors.Is(err, shard.ErrHalted) {
		t.Fatalf("submit of a revision-2 entry on a revision-1 binary: %v, want ErrHalted", err)
	}
	st := old.s.Status()
	if !st.Halted || !strings.Contains(st.HaltError, "shard 3 needs revision 2 of actor upgrade") {
		t.Fatalf("status %+v, want halted naming the revision", st)
	}
	if mr := old.s.MissingRevision(); mr == nil || mr.ActorType != upgradetest.Type || mr.Revision != "2" {
		t.Fatalf("MissingRevision %+v, want upgrade 2 (what the node reopens it for once loaded)", mr)
	}
	if m := old.s.Meta(); m.Index != before.Index {
		t.Fatalf("applied index moved from %d to %d past the refused entry", before.Index, m.Index)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	missing := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "rhizon.shard.revision_missing" {
				for _, dp := range d.DataPoints {
					missing[attrs(dp.Attributes)] += dp.Value
				}
			}
		}
	}
	if got := missing["actor_type=upgrade,revision=2,shard=3"]; got != 1 {
		t.Fatalf("rhizon.shard.revision_missing %v, want 1 for upgrade revision 2 on shard 3", missing)
	}
	if err := old.s.Raft().Snapshot().Error(); err == nil {
		t.Fatal("a waiting replica took a snapshot (a restart would skip the entry)")
	}
	old.close()

	upgraded := openReplica(t, dir, tune("upgrade@1,2"))
	var recs []shard.HistoryRecord
	testkit.Eventually(t, 10*time.Second, "the waiting entry applied", func() (bool, string) {
		recs, _, _, err = upgraded.s.History(upgradeAdd("a").Address, engine.Position{}, 10, false)
		if err != nil {
			t.Fatal(err)
		}
		return len(recs) == 1, "no event yet"
	})
	var a upgradetest.Added
	if err := json.Unmarshal(recs[0].Event.Payload, &a); err != nil {
		t.Fatal(err)
	}
	if a.By != "2" || a.Total != 2 {
		t.Fatalf("event %+v, want decided by revision 2 (total 2)", a)
	}
	if upgraded.s.Status().Halted {
		t.Fatalf("still halted: %s", upgraded.s.Status().HaltError)
	}
}
