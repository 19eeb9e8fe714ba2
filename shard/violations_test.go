package shard_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/engine"
)

// Violations through a real shard: repeats of one (principal, key) within
// the window are coalesced, new records beyond AuditNewPerWindow are
// suppressed, rhizon.violations counts each by how the audit took it, and
// only the recorded ones wait in the outbox to be published.
func TestShard_ViolationsDeduplicatedLimitedCountedAndPublishedOnce(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	// The window is the entries' logical time, stamped by the leader from
	// its clock: start well inside one window so that all of this (well
	// under a second) falls in it.
	if left := engine.AuditWindowMs - time.Now().UnixMilli()%engine.AuditWindowMs; left < 10_000 {
		time.Sleep(time.Duration(left+100) * time.Millisecond)
	}
	r := openReplica(t, t.TempDir(), nil)
	mallory := actor.Security{Principal: actor.Principal{ID: "mallory", Type: actor.PrincipalUser},
		Scopes: []actor.Scope{{Tenant: "other", Workspace: "w"}}}
	evil := func(i int, key string) actor.Command {
		c := add("victim", i)
		c.IdempotencyKey, c.Security = key, mallory
		return c
	}
	const repeats, distinct = 3, 20
	for i := range repeats {
		if res, err := r.s.Submit(ctx(t), evil(i, "same")); err != nil || res.Reason != actor.ReasonViolation {
			t.Fatalf("violation: %+v %v", res, err)
		}
	}
	for i := range distinct {
		if res, err := r.s.Submit(ctx(t), evil(100+i, fmt.Sprint("k", i))); err != nil || res.Reason != actor.ReasonViolation {
			t.Fatalf("violation: %+v %v", res, err)
		}
	}
	// The owner's command with the attacker's key is applied.
	owner := add("victim", 999)
	owner.IdempotencyKey = "same"
	if res, err := r.s.Submit(ctx(t), owner); err != nil || res.Status != actor.StatusAccepted || res.Duplicate {
		t.Fatalf("owner's command with the attacker's key: %+v %v", res, err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "rhizon.violations" {
				for _, dp := range d.DataPoints {
					got[attrs(dp.Attributes)] += dp.Value
				}
			}
		}
	}
	want := map[string]int64{
		"audit=recorded,shard=3":   engine.AuditNewPerWindow,
		"audit=coalesced,shard=3":  repeats - 1,
		"audit=suppressed,shard=3": repeats + distinct - (repeats - 1) - engine.AuditNewPerWindow,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rhizon.violations %v, want %v", got, want)
	}
	rows, err := r.s.Outbox(engine.Position{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	published := 0
	for _, row := range rows {
		if row.Data[0] == engine.OutboxRejection {
			published++
		}
	}
	if published != engine.AuditNewPerWindow {
		t.Fatalf("%d violations wait to be published, want the %d recorded", published, engine.AuditNewPerWindow)
	}
}
