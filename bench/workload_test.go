package bench

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

func TestWorkload_ZipfPicksSkewedEntities(t *testing.T) {
	const draws = 100_000
	share := func(w Workload) []float64 {
		counts := make([]int, w.Entities)
		pick := w.newPicker(7, 8)
		for range draws {
			counts[pick()]++
		}
		out := make([]float64, len(counts))
		for i, c := range counts {
			out[i] = float64(c) / draws
		}
		return out
	}
	hot := share(testWorkload(t, "hot", 1000))
	// Zipf(1.1) over 1000 entities gives entity 0 about 18% of the load
	// and the ten hottest about half; uniform would give each 0.1%.
	if hot[0] < 0.10 {
		t.Errorf("hottest entity has %.3f of the load, want > 0.10", hot[0])
	}
	top10 := 0.0
	for _, s := range hot[:10] {
		top10 += s
	}
	if top10 < 0.35 {
		t.Errorf("ten hottest entities have %.3f of the load, want > 0.35", top10)
	}
	if !(hot[0] > hot[1] && hot[1] > hot[10] && hot[10] > hot[500]) {
		t.Errorf("load not decreasing with rank: %v %v %v %v", hot[0], hot[1], hot[10], hot[500])
	}
	uni := share(testWorkload(t, "w1-command", 1000))
	if m := slices.Max(uni); m > 0.003 {
		t.Errorf("uniform workload: an entity has %.4f of the load", m)
	}
}

func TestWorkload_HotRunHitsEntityZeroMost(t *testing.T) {
	ft := &fakeTarget{}
	if _, err := Run(context.Background(), ft, Config{
		Workload: testWorkload(t, "hot", 1000), Concurrency: 2, Duration: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	best, bestN := "", 0
	for e, n := range ft.seen {
		if n > bestN {
			best, bestN = e, n
		}
	}
	if best != "bench-0" {
		t.Fatalf("hottest entity %q (%d ops), want bench-0", best, bestN)
	}
}

func TestWorkload_PayloadIsJSONOfTheRequestedSize(t *testing.T) {
	w := testWorkload(t, "w1-occ", 0)
	if w.Entities != DefaultEntities || w.PayloadBytes != 200 {
		t.Fatalf("defaults: %+v", w)
	}
	a, b := w.Payload(1), w.Payload(123456)
	for _, p := range [][]byte{a, b} {
		var v map[string]any
		if err := json.Unmarshal(p, &v); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(p) != 200 {
			t.Errorf("payload of %d bytes, want 200: %s", len(p), p)
		}
	}
	if string(a) == string(b) {
		t.Error("payloads of different updates are equal")
	}
	for _, bad := range []Workload{{Name: "z", Entities: 10, ZipfS: 1}, {Name: "n", Entities: 0}, {Name: "p", Entities: 1, PayloadBytes: -1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validates", bad)
		}
	}
	if _, err := NewWorkload("nope", 1); err == nil {
		t.Error("unknown workload accepted")
	}
}
