package bench

import (
	"math/rand/v2"
	"testing"
)

// The pointer chase must visit the whole array: a permutation with short
// cycles would keep it in cache and report a fast memory on any machine.
func TestSingleCycleVisitsEveryIndex(t *testing.T) {
	for _, n := range []int{2, 3, 10, 1000} {
		p := singleCycle(n, rand.New(rand.NewPCG(uint64(n), 7)))
		seen := make([]bool, n)
		at := uint32(0)
		for step := range n {
			if seen[at] {
				t.Fatalf("n=%d: index %d visited again after %d steps", n, at, step)
			}
			seen[at] = true
			at = p[at]
		}
		if at != 0 {
			t.Fatalf("n=%d: after %d steps at %d, want back at 0", n, n, at)
		}
	}
}

func TestCalibrateMachineIsReportedWithResults(t *testing.T) {
	c := CalibrateMachine()
	if c.SHA256MBps <= 0 || c.MemLatencyNs <= 0 {
		t.Fatalf("calibration %+v: want positive figures", c)
	}
	if m := ThisMachine(); m.Calibration == nil || *m.Calibration != c {
		t.Fatalf("ThisMachine().Calibration = %v, want %+v", m.Calibration, c)
	}
}
