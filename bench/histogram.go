package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram layout. Values are nanoseconds. Below subCount every value has a
// bucket of its own; above, each power of two [2^e, 2^(e+1)) is cut into
// subCount equal buckets, so a bucket is at most 1/subCount of its lower
// bound wide. Reporting the bucket's midpoint puts any percentile within
// 1/(2*subCount) ≈ 0.4% of the recorded value: the same precision as an
// HdrHistogram with 2 significant digits, at a fixed 36 KiB per histogram.
// (github.com/HdrHistogram/hdrhistogram-go is not in the package lists this
// project may use, and this is all of it that the bench needs.)
const (
	subBits    = 7
	subCount   = 1 << subBits
	maxExp     = 42 // values up to 2^42 ns (73 minutes) are bucketed; above, clamped
	numBuckets = (maxExp - subBits + 1) << subBits
)

// RelativeError bounds the error of a Quantile relative to the true value
// of the recorded sample at that rank.
const RelativeError = 1.0 / (2 * subCount)

// Histogram records latencies with bounded relative error in constant
// memory, so that a long run at a high rate keeps every sample's
// contribution to p99.9 without keeping the samples. The zero value is
// ready to use. It is not safe for concurrent use: the runner guards it.
type Histogram struct {
	counts []uint64
	total  uint64
	min    int64
	max    int64
	sum    float64
}

// bucketOf returns the index of the bucket holding v (v >= 0).
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1
	if e >= maxExp {
		return numBuckets - 1
	}
	shift := e - subBits
	return (shift+1)<<subBits + int(v>>shift) - subCount
}

// bucketBounds returns the lowest value of bucket i and its width.
func bucketBounds(i int) (lo, width int64) {
	if i < subCount {
		return int64(i), 1
	}
	shift := i>>subBits - 1
	sub := int64(i&(subCount-1) + subCount)
	return sub << shift, int64(1) << shift
}

// Record adds one latency. Negative durations (a clock step) count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	if h.counts == nil {
		h.counts = make([]uint64, numBuckets)
	}
	h.counts[bucketOf(v)]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.total == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, numBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// Count is the number of recorded samples.
func (h *Histogram) Count() uint64 { return h.total }

// Min is the smallest recorded sample, exactly.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max is the largest recorded sample, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the mean of the recorded samples, exactly (up to float rounding).
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Quantile returns the sample at rank ceil(q*Count()) (1-based) of the
// sorted samples, within RelativeError; q=0 and q=1 give Min and Max
// exactly. It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	if q <= 0 {
		return h.Min()
	}
	if q >= 1 {
		return h.Max()
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, w := bucketBounds(i)
			v := lo + (w-1)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return h.Max()
}

// Percentiles are the figures every report shows.
type Percentiles struct {
	P50  time.Duration
	P90  time.Duration
	P99  time.Duration
	P999 time.Duration
	Max  time.Duration
	Mean time.Duration
}

// Percentiles returns p50, p90, p99, p99.9, max and mean.
func (h *Histogram) Percentiles() Percentiles {
	return Percentiles{
		P50: h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99),
		P999: h.Quantile(0.999), Max: h.Max(), Mean: h.Mean(),
	}
}
