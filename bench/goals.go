package bench

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"text/tabwriter"
)

// The benchmark issue's performance goals, checked against one set of runs
// (`rhizon bench --compare FILES --goals cluster`, which run-peers.sh
// prints last), so that whether they are met is read off the same run as
// the figures, on the same machine. When the runs hold several rounds of
// the same load (run-peers.sh's BENCH_ROUNDS: every target once per round,
// in turn), a goal takes the median of the rounds: this machine's speed
// drifts by 15-30% between runs minutes apart, and rounds in turn expose
// every target to the drift alike.

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
	isClosed := func(r *Result, workload, target string) bool {
		return r.Workload == workload && r.Target == target && r.Mode == "closed" && r.Concurrency == GoalConcurrency && !notRun(r) && r.Ops > 0
	}
	// closed is the median over the rounds of a closed-loop load.
	closed := func(workload, target string) *medianRun {
		var tput, p99 []float64
		for _, r := range results {
			if isClosed(r, workload, target) {
				tput, p99 = append(tput, r.Throughput), append(p99, r.Latency.P99)
			}
		}
		if len(tput) == 0 {
			return nil
		}
		return &medianRun{throughput: median(tput), p99: median(p99), rounds: len(tput)}
	}
	atLeast := func(name string, r *medianRun, want float64) Goal {
		g := Goal{Name: name, Want: fmt.Sprintf(">= %.0f ops/s", want)}
		if r != nil {
			g.Measured, g.Met = fmt.Sprintf("%.0f ops/s%s", r.throughput, r.of()), r.throughput >= want
		}
		return g
	}
	// against compares a Rhizon workload's rate with a peer's rate of
	// peerWorkload in the same runs (ingress against the peer's plain
	// write: it is one JetStream write plus Rhizon's own work).
	against := func(workload, peer, peerWorkload string, want float64) Goal {
		g := Goal{Name: fmt.Sprintf("%s C=%d vs %s", workload, GoalConcurrency, peer), Want: fmt.Sprintf(">= %.2fx", want)}
		if peerWorkload != workload {
			g.Name += " " + peerWorkload
		}
		rz, p := closed(workload, Baseline), closed(peerWorkload, peer)
		if rz != nil && p != nil && p.throughput > 0 {
			x := rz.throughput / p.throughput
			g.Measured, g.Met = fmt.Sprintf("%.2fx (%.0f / %.0f ops/s%s)", x, rz.throughput, p.throughput, rz.of()), x >= want
		}
		return g
	}
	ratio := func(workload, peer string, want float64) Goal { return against(workload, peer, workload, want) }
	switch setup {
	case GoalsCluster:
		// Issue #19's bars: ratios to the peers of the same run.
		cmd := closed("w1-command", Baseline)
		p99 := Goal{Name: fmt.Sprintf("w1-command C=%d p99 vs etcd", GoalConcurrency), Want: "<= 1.50x etcd's p99"}
		if e := closed("w1-command", "etcd"); cmd != nil && e != nil && e.p99 > 0 {
			x := cmd.p99 / e.p99
			p99.Measured, p99.Met = fmt.Sprintf("%.2fx (%s / %s ms%s)", x, fmtFloatMS(cmd.p99), fmtFloatMS(e.p99), cmd.of()), x <= 1.5
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
		// Open loop at half the closed-loop peak: each open-loop w1-command
		// run within 10% of half the closed-loop peak of its round (the last
		// closed-loop w1-command run before it); its p99 within 3x its p50,
		// the median run's over several rounds.
		open := Goal{Name: "w1-command open loop at half the peak", Want: "p99 <= 3x p50"}
		var opens []*Result
		var peak float64
		for _, r := range results {
			if isClosed(r, "w1-command", Baseline) {
				peak = r.Throughput
			}
			if r.Workload == "w1-command" && r.Target == Baseline && r.Mode == "open" && !notRun(r) && r.Ops > 0 &&
				r.Rate >= 0.45*peak && r.Rate <= 0.55*peak && r.Latency.P50 > 0 {
				opens = append(opens, r)
			}
		}
		if len(opens) > 0 {
			x := func(r *Result) float64 { return r.Latency.P99 / r.Latency.P50 }
			sort.Slice(opens, func(i, j int) bool { return x(opens[i]) < x(opens[j]) })
			r := opens[len(opens)/2] // the upper median: a run that happened, the worse of two
			rounds := ""
			if len(opens) > 1 {
				rounds = fmt.Sprintf("; median of %d rounds", len(opens))
			}
			open.Measured = fmt.Sprintf("%.1fx (p99 %s / p50 %s ms at %.0f/s%s)", x(r), fmtFloatMS(r.Latency.P99), fmtFloatMS(r.Latency.P50), r.Rate, rounds)
			open.Met = x(r) <= 3
		}
		return append(goals, open), nil
	case GoalsDev:
		return []Goal{atLeast(fmt.Sprintf("w1-command C=%d, one node", GoalConcurrency), closed("w1-command", Baseline), 25000)}, nil
	}
	return nil, fmt.Errorf("bench: goals for %q: want %s or %s", setup, GoalsCluster, GoalsDev)
}

// medianRun is a closed-loop load's median over the rounds that ran it.
type medianRun struct {
	throughput, p99 float64
	rounds          int
}

// of says how many rounds a figure is the median of, when more than one.
func (m *medianRun) of() string {
	if m.rounds < 2 {
		return ""
	}
	return fmt.Sprintf("; median of %d rounds", m.rounds)
}

// median of v (the mean of the middle two for an even count).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
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
