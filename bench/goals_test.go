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
	var b bytes.Buffer
	if err := WriteGoals(&b, results, GoalsCluster); err != nil {
		t.Fatal(err)
	}
	table := b.String()
	for name, want := range map[string]string{
		"w1-command C=128 vs etcd":                      "1.07x (16000 / 15000 ops/s) met",
		"w1-command C=128 vs jetstream-kv-sync":         "0.40x (16000 / 40000 ops/s) not met",
		"w1-command C=128 p99 vs etcd":                  "1.75x (35.0 / 20.0 ms) not met",
		"w1-occ C=128 vs jetstream-kv-sync":             "0.62x (10000 / 16000 ops/s) met",
		"w1-occ C=128 vs etcd":                          "0.80x (10000 / 12500 ops/s) not met",
		"w1-occ C=128 vs jetstream-kv-sync-nodirect":    "0.40x (10000 / 25000 ops/s) not met",
		"ingress C=128 vs jetstream-kv-sync w1-command": "0.53x (21000 / 40000 ops/s) met",
		"saga C=128":                            "800 ops/s not met",
		"w1-command open loop at half the peak": "2.8x (p99 11.0 / p50 4.00 ms at 8000/s) met",
	} {
		if line := goalLine(t, table, name); !strings.HasSuffix(line, want) {
			t.Errorf("goal %q: %q, want it to end with %q", name, line, want)
		}
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
