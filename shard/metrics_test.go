package shard_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/rhizon/rhizon/actor"
)

// The shard's counters carry the shard and the result (or status) in one
// attribute set, which the metrics build once rather than per measurement.
func TestShard_MetricsCountCommandsByShardAndResult(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })

	r := openReplica(t, t.TempDir(), nil)
	submitAll(t, r.s, 20)
	stale := uint64(0)
	conflict := add("c1", 999)
	conflict.ExpectedVersion = &stale
	if res, err := r.s.Submit(ctx(t), conflict); err != nil || res.Reason != actor.ReasonConflict {
		t.Fatalf("conflicting submit = %+v, %v", res, err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	commands := map[string]int64{}
	submits := map[string]uint64{}
	stages := map[string]uint64{} // rhizon.submit.queued.duration and rhizon.entry.duration by shard
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name != "rhizon.commands" {
					continue
				}
				for _, dp := range d.DataPoints {
					commands[attrs(dp.Attributes)] += dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					switch m.Name {
					case "rhizon.submit.duration":
						submits[attrs(dp.Attributes)] += dp.Count
					case "rhizon.submit.queued.duration", "rhizon.entry.duration":
						stages[m.Name+" "+attrs(dp.Attributes)] += dp.Count
					}
				}
			}
		}
	}
	if got := commands["result=accepted,shard=3"]; got != 20 {
		t.Errorf("accepted commands of shard 3 = %d; all points %v", got, commands)
	}
	if got := commands["result=conflict,shard=3"]; got != 1 {
		t.Errorf("conflicts of shard 3 = %d; all points %v", got, commands)
	}
	if got := submits["shard=3,status=ok"]; got != 21 {
		t.Errorf("ok submits of shard 3 = %d; all points %v", got, submits)
	}
	// The stages of a submit: every command waited in the queue once; each
	// entry (one or more commands) made one round trip.
	if got := stages["rhizon.submit.queued.duration shard=3"]; got != 21 {
		t.Errorf("queued commands of shard 3 = %d; all points %v", got, stages)
	}
	if got := stages["rhizon.entry.duration shard=3"]; got < 1 || got > 21 {
		t.Errorf("entries of shard 3 = %d, want 1 to 21; all points %v", got, stages)
	}
}

func attrs(s attribute.Set) string {
	out := ""
	for _, kv := range s.ToSlice() {
		if out != "" {
			out += ","
		}
		out += string(kv.Key) + "=" + kv.Value.String()
	}
	return out
}
