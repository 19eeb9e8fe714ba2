package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// gcPercent is the node's GOGC when the environment sets none.
const gcPercent = 200

// cgroupMemoryMax is the cgroup v2 file holding the container's memory limit.
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// tuneGC sets the collector for a node: GOGC 200 instead of 100 (a node's
// live heap is mostly caches while every command allocates short-lived
// garbage, so this halves the collections; GC was 6.6% of a node's CPU at
// 100), bounded by a soft memory limit of 90% of the container's, so that
// the larger heap target never walks a node into its OOM kill: near the
// limit the runtime collects as often as it must. GOGC and GOMEMLIMIT in the
// environment win. It returns the memory limit it set (0: none).
func tuneGC(limitFile string) int64 {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	raw, err := os.ReadFile(limitFile)
	if err != nil {
		return 0
	}
	limit, ok := parseMemoryMax(string(raw))
	if !ok {
		return 0
	}
	soft := limit / 10 * 9
	debug.SetMemoryLimit(soft)
	return soft
}

// parseMemoryMax reads cgroup v2's memory.max: a byte count, or "max" for
// no limit.
func parseMemoryMax(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "" || s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
