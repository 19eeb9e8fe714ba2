package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// oracle is the sample at rank ceil(q*n) of the sorted samples, the
// definition Quantile approximates.
func oracle(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func TestHistogram_QuantilesMatchSortedOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gens := map[string]func() int64{
		// Latency-like: log-normal around 2ms, with a heavy tail.
		"lognormal": func() int64 { return int64(math.Exp(r.NormFloat64()*1.2) * 2e6) },
		// Spread over nine orders of magnitude, including exact small values.
		"loguniform": func() int64 { return int64(math.Pow(10, r.Float64()*9)) },
		"small":      func() int64 { return r.Int64N(300) },
	}
	qs := []float64{0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999}
	for name, gen := range gens {
		t.Run(name, func(t *testing.T) {
			for _, n := range []int{1, 7, 1000, 100_000} {
				var h Histogram
				vals := make([]int64, n)
				for i := range vals {
					vals[i] = gen()
					h.Record(time.Duration(vals[i]))
				}
				slices.Sort(vals)
				if h.Count() != uint64(n) || int64(h.Min()) != vals[0] || int64(h.Max()) != vals[n-1] {
					t.Fatalf("n=%d: count %d min %v max %v, want %d %d %d", n, h.Count(), h.Min(), h.Max(), n, vals[0], vals[n-1])
				}
				for _, q := range qs {
					want, got := float64(oracle(vals, q)), float64(h.Quantile(q))
					if diff := math.Abs(got - want); diff > want*RelativeError+0.5 {
						t.Errorf("n=%d q=%v: got %v, want %v (relative error %.4f > %.4f)", n, q, got, want, diff/want, RelativeError)
					}
				}
				if h.Quantile(0) != h.Min() || h.Quantile(1) != h.Max() {
					t.Errorf("n=%d: q=0/1 give %v/%v, want min/max %v/%v", n, h.Quantile(0), h.Quantile(1), h.Min(), h.Max())
				}
			}
		})
	}
}

func TestHistogram_BucketsAreContiguousAndNarrow(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		v := int64(math.Pow(2, r.Float64()*maxExp))
		i := bucketOf(v)
		lo, w := bucketBounds(i)
		if v < lo || v >= lo+w {
			t.Fatalf("v=%d in bucket %d = [%d, %d)", v, i, lo, lo+w)
		}
		if lo >= subCount && float64(w)/float64(lo) > 1.0/subCount {
			t.Fatalf("bucket %d = [%d, +%d) wider than 1/%d of its bound", i, lo, w, subCount)
		}
	}
	for i := 1; i < numBuckets; i++ {
		plo, pw := bucketBounds(i - 1)
		if lo, _ := bucketBounds(i); lo != plo+pw {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, plo+pw)
		}
	}
	if got := bucketOf(math.MaxInt64); got != numBuckets-1 {
		t.Fatalf("huge value in bucket %d, want the last (%d)", got, numBuckets-1)
	}
}

func TestHistogram_MergeEqualsRecordingAll(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var all, a, b Histogram
	for i := range 10_000 {
		d := time.Duration(r.Int64N(int64(time.Second)))
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(nil)
	m.Merge(&Histogram{})
	if m.Count() != all.Count() || m.Min() != all.Min() || m.Max() != all.Max() || m.Percentiles() != all.Percentiles() {
		t.Fatalf("merged %+v, recorded %+v", m.Percentiles(), all.Percentiles())
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 || empty.Count() != 0 {
		t.Fatal("empty histogram reports samples")
	}
}
