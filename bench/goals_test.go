package bench

import (
	"bytes"
	"strings"
	"testing"
)

// goalLine returns the line of goal name with its spaces collapsed.
func goalLine(t *testing.T, table, name string) string {
	t.Helper()
	for line := range strings.SplitSeq(table, "\n") {
		if strings.HasPrefix(line, name+"  ") {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	t.Fatalf("no goal %q in\n%s", name, table)
	return ""
}

// clusterGoals is the cluster goals table of results.
func clusterGoals(t *testing.T, results []*Result) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteGoals(&b, results, GoalsCluster); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// wantGoalEndings checks that each goal's line of table ends as wanted.
func wantGoalEndings(t *testing.T, table string, want map[string]string) {
	t.Helper()
	for name, end := range want {
		if line := goalLine(t, table, name); !strings.HasSuffix(line, end) {
			t.Errorf("goal %q: %q, want it to end with %q", name, line, end)
		}
	}
}

func TestGoals_ClusterVerdictsFromTheRuns(t *testing.T) {
	open := result("w1-command", "rhizon", 512, 0, 4, 11)
	open.Mode, open.Rate, open.Ops = "open", 8000, 80000 // p99 2.75x p50: met
	results := []*Result{
		result("w1-command", "rhizon", 128, 16000, 10, 35),
		result("w1-command", "etcd", 128, 15000, 9, 20),              // 1.07x: met; p99 1.75x: not met
		result("w1-command", "jetstream-kv-sync", 128, 40000, 3, 10), // 0.40x: not met
		result("w1-occ", "rhizon", 128, 10000, 8, 25),
		result("w1-occ", "jetstream-kv-sync", 128, 16000, 20, 50),     // 0.62x: met
		result("w1-occ", "etcd", 128, 12500, 30, 60),                  // 0.80x: not met
		result("w1-occ", JetStreamKVSyncNoDirect, 128, 25000, 25, 50), // 0.40x: not met
		result("w1-occ", "rhizon", 16, 99999, 1, 1),                   // another load: ignored
		result("ingress", "rhizon", 128, 21000, 10, 40),               // 0.53x of the peer's w1-command: met
		result("saga", "rhizon", 128, 800, 100, 300),                  // under 816: not met
		open,
	}
	wantGoalEndings(t, clusterGoals(t, results), map[string]string{
		"w1-command C=128 vs etcd":                      "1.07x (16000 / 15000 ops/s) met",
		"w1-command C=128 vs jetstream-kv-sync":         "0.40x (16000 / 40000 ops/s) not met",
		"w1-command C=128 p99 vs etcd":                  "1.75x (35.0 / 20.0 ms) not met",
		"w1-occ C=128 vs jetstream-kv-sync":             "0.62x (10000 / 16000 ops/s) met",
		"w1-occ C=128 vs etcd":                          "0.80x (10000 / 12500 ops/s) not met",
		"w1-occ C=128 vs jetstream-kv-sync-nodirect":    "0.40x (10000 / 25000 ops/s) not met",
		"ingress C=128 vs jetstream-kv-sync w1-command": "0.53x (21000 / 40000 ops/s) met",
		"saga C=128":                            "800 ops/s not met",
		"w1-command open loop at half the peak": "2.8x (p99 11.0 / p50 4.00 ms at 8000/s) met",
	})
}

func TestGoals_WhatDidNotRunIsNotMeasured(t *testing.T) {
	failed := result("w1-occ", "etcd", 128, 0, 0, 0)
	failed.SetupError = "etcd did not start"
	open := result("w1-command", "rhizon", 512, 0, 2, 3)
	open.Mode, open.Rate, open.Ops = "open", 1000, 10000 // far from half of 16000
	results := []*Result{result("w1-occ", "rhizon", 128, 10000, 8, 25), failed, result("w1-command", "rhizon", 128, 16000, 10, 20), open}
	table := clusterGoals(t, results)
	for _, name := range []string{"w1-occ C=128 vs etcd", "w1-occ C=128 vs jetstream-kv-sync", "w1-occ C=128 vs jetstream-kv-sync-nodirect", "w1-command open loop at half the peak"} {
		if line := goalLine(t, table, name); !strings.HasSuffix(line, "- not measured") {
			t.Errorf("goal %q: %q, want not measured", name, line)
		}
	}
	var b bytes.Buffer
	if err := WriteGoals(&b, results, GoalsDev); err != nil {
		t.Fatal(err)
	}
	if line := goalLine(t, b.String(), "w1-command C=128, one node"); !strings.HasSuffix(line, "16000 ops/s not met") {
		t.Errorf("dev goal: %q", line)
	}
	if err := WriteGoals(&b, results, "laptop"); err == nil {
		t.Error("an unknown setup gave no error")
	}
}

// Rounds (run-peers.sh's BENCH_ROUNDS): a goal takes the median of the
// rounds of each load, and an open-loop run counts against the closed-loop
// peak of its own round (the last one before it).
func TestGoals_RoundsGiveMedians(t *testing.T) {
	openRun := func(rate, p50, p99 float64) *Result {
		r := result("w1-command", "rhizon", 512, 0, p50, p99)
		r.Mode, r.Rate, r.Ops = "open", rate, uint64(rate*10)
		return r
	}
	results := []*Result{
		// Round 1: a slow moment for everyone.
		result("w1-command", "rhizon", 128, 6000, 10, 60),
		openRun(3000, 10, 25), // 2.5x, at half of 6000
		result("w1-command", "etcd", 128, 9000, 9, 30),
		// Round 2.
		result("w1-command", "rhizon", 128, 9000, 10, 50),
		openRun(4500, 10, 90), // 9.0x, at half of 9000
		result("w1-command", "etcd", 128, 10000, 9, 40),
		// Round 3.
		result("w1-command", "rhizon", 128, 7000, 10, 40),
		openRun(3500, 10, 40), // 4.0x, at half of 7000
		openRun(1000, 10, 11), // far from half of 7000: not counted
		result("w1-command", "etcd", 128, 8000, 9, 35),
	}
	wantGoalEndings(t, clusterGoals(t, results), map[string]string{
		// Medians: rhizon 7000, etcd 9000, p99s 50 and 35.
		"w1-command C=128 vs etcd":              "0.78x (7000 / 9000 ops/s; median of 3 rounds) not met",
		"w1-command C=128 p99 vs etcd":          "1.43x (50.0 / 35.0 ms; median of 3 rounds) met",
		"w1-command open loop at half the peak": "4.0x (p99 40.0 / p50 10.0 ms at 3500/s; median of 3 rounds) not met",
	})
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of 1..4 = %v, want 2.5", got)
	}
}
