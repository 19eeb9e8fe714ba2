package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// The benchmark issue's performance goals, checked against one set of runs
// (`rhizon bench --compare FILES --goals cluster`, which run-peers.sh
// prints last), so that whether they are met is read off the same run as
// the figures, on the same machine.

// Setups the goals are stated for.
const (
	GoalsCluster = "cluster" // 3 nodes
	GoalsDev     = "dev"     // one `rhizon dev` node
)

// GoalConcurrency is the closed-loop load of the goals.
const GoalConcurrency = 128

// Goal is one goal and what the runs say about it.
type Goal struct {
	Name     string // e.g. "w1-occ C=128 vs jetstream-kv-sync"
	Want     string // e.g. ">= 2.00x"
	Measured string // "" when the runs hold nothing to check it with
	Met      bool
}

// CheckGoals evaluates the goals of setup (GoalsCluster or GoalsDev).
func CheckGoals(results []*Result, setup string) ([]Goal, error) {
	closed := func(workload, target string) *Result {
		var last *Result
		for _, r := range results {
			if r.Workload == workload && r.Target == target && r.Mode == "closed" && r.Concurrency == GoalConcurrency && !notRun(r) && r.Ops > 0 {
				last = r
			}
		}
		return last
	}
	atLeast := func(name string, r *Result, want float64) Goal {
		g := Goal{Name: name, Want: fmt.Sprintf(">= %.0f ops/s", want)}
		if r != nil {
			g.Measured, g.Met = fmt.Sprintf("%.0f ops/s", r.Throughput), r.Throughput >= want
		}
		return g
	}
	ratio := func(workload, peer string, want float64) Goal {
		g := Goal{Name: fmt.Sprintf("%s C=%d vs %s", workload, GoalConcurrency, peer), Want: fmt.Sprintf(">= %.2fx", want)}
		rz, p := closed(workload, Baseline), closed(workload, peer)
		if rz != nil && p != nil && p.Throughput > 0 {
			x := rz.Throughput / p.Throughput
			g.Measured, g.Met = fmt.Sprintf("%.2fx (%.0f / %.0f ops/s)", x, rz.Throughput, p.Throughput), x >= want
		}
		return g
	}
	// against compares a Rhizon workload's rate with another workload's
	// rate of a peer in the same runs (ingress against the peer's plain
	// write: it is one JetStream write plus Rhizon's own work).
	against := func(workload, peer, peerWorkload string, want float64) Goal {
		g := Goal{Name: fmt.Sprintf("%s C=%d vs %s %s", workload, GoalConcurrency, peer, peerWorkload), Want: fmt.Sprintf(">= %.2fx", want)}
		rz, p := closed(workload, Baseline), closed(peerWorkload, peer)
		if rz != nil && p != nil && p.Throughput > 0 {
			x := rz.Throughput / p.Throughput
			g.Measured, g.Met = fmt.Sprintf("%.2fx (%.0f / %.0f ops/s)", x, rz.Throughput, p.Throughput), x >= want
		}
		return g
	}
	switch setup {
	case GoalsCluster:
		// Issue #19's bars: ratios to the peers of the same run.
		cmd := closed("w1-command", Baseline)
		p99 := Goal{Name: fmt.Sprintf("w1-command C=%d p99 vs etcd", GoalConcurrency), Want: "<= 1.50x etcd's p99"}
		if e := closed("w1-command", "etcd"); cmd != nil && e != nil && e.Latency.P99 > 0 {
			x := cmd.Latency.P99 / e.Latency.P99
			p99.Measured, p99.Met = fmt.Sprintf("%.2fx (%s / %s ms)", x, fmtFloatMS(cmd.Latency.P99), fmtFloatMS(e.Latency.P99)), x <= 1.5
		}
		goals := []Goal{
			ratio("w1-command", "etcd", 1),
			ratio("w1-command", "jetstream-kv-sync", 0.5),
			p99,
			ratio("w1-occ", "etcd", 1),
			ratio("w1-occ", "jetstream-kv-sync", 0.5),
			// The same bar against the peer whose read is not a direct get
			// that any replica may answer: Rhizon's read is linearizable.
			ratio("w1-occ", JetStreamKVSyncNoDirect, 0.5),
			against("ingress", "jetstream-kv-sync", "w1-command", 0.5),
			// 3x the 272 ops/s measured before issue #19.
			atLeast(fmt.Sprintf("saga C=%d", GoalConcurrency), closed("saga", Baseline), 3*272),
		}
		// Open loop at half the closed-loop peak: the last open-loop
		// w1-command run within 10% of half of it; its p99 within 3x its p50.
		open := Goal{Name: "w1-command open loop at half the peak", Want: "p99 <= 3x p50"}
		if cmd != nil {
			half := cmd.Throughput / 2
			for _, r := range results {
				if r.Workload == "w1-command" && r.Target == Baseline && r.Mode == "open" && !notRun(r) && r.Ops > 0 &&
					r.Rate >= 0.9*half && r.Rate <= 1.1*half && r.Latency.P50 > 0 {
					x := r.Latency.P99 / r.Latency.P50
					open.Measured = fmt.Sprintf("%.1fx (p99 %s / p50 %s ms at %.0f/s)", x, fmtFloatMS(r.Latency.P99), fmtFloatMS(r.Latency.P50), r.Rate)
					open.Met = x <= 3
				}
			}
		}
		return append(goals, open), nil
	case GoalsDev:
		return []Goal{atLeast(fmt.Sprintf("w1-command C=%d, one node", GoalConcurrency), closed("w1-command", Baseline), 25000)}, nil
	}
	return nil, fmt.Errorf("bench: goals for %q: want %s or %s", setup, GoalsCluster, GoalsDev)
}

// WriteGoals prints the goals of setup and whether the runs meet them.
func WriteGoals(w io.Writer, results []*Result, setup string) error {
	goals, err := CheckGoals(results, setup)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "GOAL (%s)\tWANTED\tMEASURED\tVERDICT\n", setup)
	for _, g := range goals {
		verdict, measured := "not met", g.Measured
		switch {
		case g.Measured == "":
			verdict, measured = "not measured", "-"
		case g.Met:
			verdict = "met"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.Want, measured, verdict)
	}
	return tw.Flush()
}
