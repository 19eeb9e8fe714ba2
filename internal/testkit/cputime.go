package testkit

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is the process's user + system CPU time so far: benchmarks report
// the CPU per operation of everything in the process (client and nodes).
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
