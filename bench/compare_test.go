package bench

import (
	"bytes"
	"strings"
	"testing"
)

func result(workload, target string, conc int, tput, p50, p99 float64) *Result {
	return &Result{
		Workload: workload, Target: target, Mode: "closed", Concurrency: conc, Ops: uint64(tput * 10),
		Throughput: tput, Latency: LatencyMS{P50: p50, P99: p99}, Errors: map[string]uint64{"timeout": 0},
	}
}

// row returns the comparison line of target at load (workload, conc).
func row(t *testing.T, table, workload, target string, conc string) []string {
	t.Helper()
	for line := range strings.SplitSeq(table, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[0] == workload && f[3] == conc && f[4] == target {
			return f
		}
	}
	t.Fatalf("no row %s c=%s %s in\n%s", workload, conc, target, table)
	return nil
}

func TestCompare_RatioOfRhizonToEachPeerPerLoad(t *testing.T) {
	results := []*Result{
		// Peers first, as a --compare of files in any order may list them:
		// Rhizon's rows still come first in each load.
		result("w1-occ", "etcd", 128, 2000, 50, 100),
		result("w1-occ", "jetstream-kv-sync", 128, 5000, 20, 50),
		result("w1-occ", "rhizon", 128, 10000, 8, 25),
		result("w1-occ", "rhizon", 16, 4000, 3, 9),
		result("w1-occ", "etcd", 16, 0, 0, 0),  // nothing answered
		result("hot", "etcd", 16, 3000, 4, 10), // no rhizon run of this load
	}
	results[4].Ops = 0
	if got := Targets(results); strings.Join(got, ",") != "rhizon,etcd,jetstream-kv-sync" {
		t.Fatalf("targets %v", got)
	}
	var b bytes.Buffer
	if err := WriteComparison(&b, results); err != nil {
		t.Fatal(err)
	}
	table := b.String()
	t.Log("\n" + table)

	if f := row(t, table, "w1-occ", "rhizon", "128"); f[5] != "10000" || f[9] != "-" {
		t.Errorf("rhizon row: %v", f)
	}
	if f := row(t, table, "w1-occ", "etcd", "128"); f[5] != "2000" || f[9] != "5.00x" || strings.Join(f[10:], " ") != "25.0 | 100" {
		t.Errorf("etcd row: %v", f)
	}
	if f := row(t, table, "w1-occ", "jetstream-kv-sync", "128"); f[9] != "2.00x" || strings.Join(f[10:], " ") != "25.0 | 50.0" {
		t.Errorf("jetstream row: %v", f)
	}
	if f := row(t, table, "w1-occ", "etcd", "16"); f[6] != "-" || f[9] != "-" {
		t.Errorf("a run with no answer has no latency and no ratio: %v", f)
	}
	if f := row(t, table, "hot", "etcd", "16"); f[9] != "-" {
		t.Errorf("a load without a rhizon run has no ratio: %v", f)
	}
	// Rhizon's rows come first within a load.
	if strings.Index(table, "10000") > strings.Index(table, "2000 ") {
		t.Errorf("rhizon is not the first row of its load:\n%s", table)
	}
}

func TestCompare_ReadJSONReadsWhatWriteJSONWrote(t *testing.T) {
	in := []*Result{result("w1-occ", "rhizon", 16, 100, 1, 2), result("w1-occ", "etcd", 16, 50, 2, 4)}
	var b bytes.Buffer
	if err := WriteJSON(&b, in); err != nil {
		t.Fatal(err)
	}
	b.WriteString("\n") // a blank line, as from concatenated files
	out, err := ReadJSON(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Target != "rhizon" || out[1].Target != "etcd" || out[1].Throughput != 50 || out[1].Latency.P99 != 4 {
		t.Fatalf("read back %+v %+v", out[0], out[1])
	}
	if _, err := ReadJSON(strings.NewReader("{not json\n")); err == nil {
		t.Error("bad JSON read without error")
	}
}
