package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestParseMemoryMax(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"2147483648\n": 2 << 30, "max\n": 0, "": 0, "-1": 0, "junk": 0} {
		got, ok := parseMemoryMax(in)
		if got != want || ok != (want > 0) {
			t.Errorf("parseMemoryMax(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

// A container limit becomes a soft limit 10% under it, unless GOMEMLIMIT
// says otherwise; GOGC defaults to 200 unless the environment sets it.
func TestTuneGCFollowsTheContainerLimit(t *testing.T) {
	prevLimit := debug.SetMemoryLimit(-1)
	prevGC := debug.SetGCPercent(100)
	t.Cleanup(func() {
		debug.SetMemoryLimit(prevLimit)
		debug.SetGCPercent(prevGC)
	})
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	file := filepath.Join(t.TempDir(), "memory.max")
	if err := os.WriteFile(file, []byte("2147483648\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if got, want := tuneGC(file), int64(2<<30)/10*9; got != want || debug.SetMemoryLimit(-1) != want {
		t.Fatalf("tuneGC = %d, runtime limit %d; want %d", got, debug.SetMemoryLimit(-1), want)
	}
	if gc := debug.SetGCPercent(100); gc != gcPercent {
		t.Fatalf("GOGC %d, want %d", gc, gcPercent)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "1GiB")
	t.Setenv("GOGC", "50")
	debug.SetGCPercent(50)
	if got := tuneGC(file); got != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("tuneGC with GOMEMLIMIT set = %d, limit %d; want it left alone", got, debug.SetMemoryLimit(-1))
	}
	if gc := debug.SetGCPercent(50); gc != 50 {
		t.Fatalf("GOGC %d with GOGC=50 in the environment", gc)
	}
	if got := tuneGC(filepath.Join(t.TempDir(), "absent")); got != 0 {
		t.Fatalf("tuneGC without a cgroup file = %d", got)
	}
}
