package bench

import (
	"crypto/sha256"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Calibration is a quick measure of the machine's speed, taken by `rhizon
// bench` before its runs: the development machine's speed has changed 2-3.5x
// from one day to the next (the engine benchmark gave 44k to 183k commands/s
// on different days), so a figure means little without it. Both are single
// goroutine figures.
type Calibration struct {
	// SHA256MBps is hashing throughput of one core: CPU speed.
	SHA256MBps float64 `json:"sha256_mb_s"`
	// MemLatencyNs is one dependent random read in a 64 MiB array: what
	// Badger's memtable search and the Go collector wait for.
	MemLatencyNs float64 `json:"mem_latency_ns"`
}

const (
	calibHashBytes = 32 << 20
	calibMemBytes  = 64 << 20 // well beyond the caches
	calibLineWords = 16       // uint32s in a 64-byte cache line
	calibMemSteps  = 2 << 20
)

var calibration atomic.Pointer[Calibration]

// CalibrateMachine measures the machine (under a second on the 2-core
// development machine) and records the result, which ThisMachine then
// reports in every Result of this process.
func CalibrateMachine() Calibration {
	c := Calibration{SHA256MBps: hashSpeed(), MemLatencyNs: memLatency()}
	calibration.Store(&c)
	return c
}

func hashSpeed() float64 {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	h := sha256.New()
	start := time.Now()
	for range calibHashBytes / len(buf) {
		h.Write(buf)
	}
	h.Sum(nil)
	return float64(calibHashBytes) / 1e6 / time.Since(start).Seconds()
}

func memLatency() float64 {
	// One link per cache line, the lines in one random cycle: shuffling
	// lines rather than words builds it 16 times faster, and every step is
	// still a miss.
	lines := calibMemBytes / 4 / calibLineWords
	order := singleCycle(lines, rand.New(rand.NewPCG(1, 2)))
	next := make([]uint32, lines*calibLineWords)
	for i, o := range order {
		next[i*calibLineWords] = o * calibLineWords
	}
	var at uint32
	start := time.Now()
	for range calibMemSteps {
		at = next[at] // each read depends on the previous one
	}
	d := time.Since(start)
	sink.Store(at)
	return float64(d.Nanoseconds()) / calibMemSteps
}

// sink keeps the pointer chase from being optimised away.
var sink atomic.Uint32

// singleCycle returns a permutation of [0, n) that is one cycle through
// every index (Sattolo's algorithm), so following it from any index visits
// the whole array in a random order before it comes back.
func singleCycle(n int, r *rand.Rand) []uint32 {
	p := make([]uint32, n)
	for i := range p {
		p[i] = uint32(i)
	}
	for i := n - 1; i > 0; i-- {
		j := r.IntN(i)
		p[i], p[j] = p[j], p[i]
	}
	return p
}
