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
	p99Below := func(name string, r *Result, want float64) Goal {
		g := Goal{Name: name, Want: fmt.Sprintf("p99 < %.0f ms", want)}
		if r != nil {
			g.Measured, g.Met = fmt.Sprintf("p99 %s ms", fmtFloatMS(r.Latency.P99)), r.Latency.P99 < want
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
	switch setup {
	case GoalsCluster:
		occ, cmd := closed("w1-occ", Baseline), closed("w1-command", Baseline)
		goals := []Goal{
			ratio("w1-occ", "jetstream-kv-sync", 2),
			// The same bar against the peer whose read is not a direct get
			// that any replica may answer: Rhizon's read is linearizable.
			ratio("w1-occ", JetStreamKVSyncNoDirect, 2),
			ratio("w1-occ", "etcd", 4),
			p99Below(fmt.Sprintf("w1-occ C=%d", GoalConcurrency), occ, 40),
			atLeast(fmt.Sprintf("w1-command C=%d", GoalConcurrency), cmd, 15000),
			p99Below(fmt.Sprintf("w1-command C=%d", GoalConcurrency), cmd, 30),
		}
		// Open loop at half the closed-loop peak: the last open-loop
		// w1-command run within 10% of half of it.
		open := Goal{Name: "w1-command open loop at half the peak", Want: "p99 < 10 ms"}
		if cmd != nil {
			half := cmd.Throughput / 2
			for _, r := range results {
				if r.Workload == "w1-command" && r.Target == Baseline && r.Mode == "open" && !notRun(r) && r.Ops > 0 &&
					r.Rate >= 0.9*half && r.Rate <= 1.1*half {
					open.Measured = fmt.Sprintf("p99 %s ms at %.0f/s", fmtFloatMS(r.Latency.P99), r.Rate)
					open.Met = r.Latency.P99 < 10
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
