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

func TestGoals_ClusterVerdictsFromTheRuns(t *testing.T) {
	open := result("w1-command", "rhizon", 512, 0, 4, 9.5)
	open.Mode, open.Rate, open.Ops = "open", 8000, 80000
	results := []*Result{
		result("w1-occ", "rhizon", 128, 10000, 8, 25),
		result("w1-occ", "jetstream-kv-sync", 128, 4000, 20, 50),     // 2.5x: met
		result("w1-occ", "etcd", 128, 3000, 30, 60),                  // 3.33x: not met
		result("w1-occ", JetStreamKVSyncNoDirect, 128, 6000, 25, 50), // 1.67x: not met
		result("w1-occ", "rhizon", 16, 99999, 1, 1),                  // another load: ignored
		result("w1-command", "rhizon", 128, 16000, 10, 35),           // ops met, p99 not
		open,
	}
	var b bytes.Buffer
	if err := WriteGoals(&b, results, GoalsCluster); err != nil {
		t.Fatal(err)
	}
	table := b.String()
	for name, want := range map[string]string{
		"w1-occ C=128 vs jetstream-kv-sync":          "2.50x (10000 / 4000 ops/s) met",
		"w1-occ C=128 vs etcd":                       "3.33x (10000 / 3000 ops/s) not met",
		"w1-occ C=128 vs jetstream-kv-sync-nodirect": "1.67x (10000 / 6000 ops/s) not met",
		"w1-occ C=128":                               "p99 25.0 ms met",
		"w1-command C=128":                           "16000 ops/s met",
		"w1-command open loop at half the peak":      "p99 9.50 ms at 8000/s met",
	} {
		if line := goalLine(t, table, name); !strings.HasSuffix(line, want) {
			t.Errorf("goal %q: %q, want it to end with %q", name, line, want)
		}
	}
	// Two goals share the name "w1-command C=128": the p99 one is not met.
	if !strings.Contains(strings.Join(strings.Fields(table), " "), "p99 < 30 ms p99 35.0 ms not met") {
		t.Errorf("w1-command p99 goal not reported as not met:\n%s", table)
	}
}

func TestGoals_WhatDidNotRunIsNotMeasured(t *testing.T) {
	failed := result("w1-occ", "etcd", 128, 0, 0, 0)
	failed.SetupError = "etcd did not start"
	open := result("w1-command", "rhizon", 512, 0, 2, 3)
	open.Mode, open.Rate, open.Ops = "open", 1000, 10000 // far from half of 16000
	results := []*Result{result("w1-occ", "rhizon", 128, 10000, 8, 25), failed, result("w1-command", "rhizon", 128, 16000, 10, 20), open}
	var b bytes.Buffer
	if err := WriteGoals(&b, results, GoalsCluster); err != nil {
		t.Fatal(err)
	}
	table := b.String()
	for _, name := range []string{"w1-occ C=128 vs etcd", "w1-occ C=128 vs jetstream-kv-sync", "w1-occ C=128 vs jetstream-kv-sync-nodirect", "w1-command open loop at half the peak"} {
		if line := goalLine(t, table, name); !strings.HasSuffix(line, "- not measured") {
			t.Errorf("goal %q: %q, want not measured", name, line)
		}
	}
	b.Reset()
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
