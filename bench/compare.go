package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// Baseline is the target the comparison divides by: Rhizon.
const Baseline = "rhizon"

// runKey is what makes two runs comparable: the same load on different
// targets.
type runKey struct {
	workload    string
	mode        string
	concurrency int
	rate        float64
}

func keyOf(r *Result) runKey {
	return runKey{workload: r.Workload, mode: r.Mode, concurrency: r.Concurrency, rate: r.Rate}
}

// Targets returns the distinct targets of results, Baseline first, then in
// order of first appearance.
func Targets(results []*Result) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range results {
		if r.Target == Baseline && !seen[Baseline] {
			out = append([]string{Baseline}, out...)
			seen[Baseline] = true
		}
	}
	for _, r := range results {
		if !seen[r.Target] {
			out = append(out, r.Target)
			seen[r.Target] = true
		}
	}
	return out
}

// WriteComparison prints the runs side by side: for each load (workload,
// mode, rate, concurrency) a row per target with its throughput, p50 and
// p99, and, on each other target's row, Rhizon's throughput divided by
// that target's and the two p99s (Rhizon's first). A load that did not run
// on Rhizon has no ratio. When a target ran the same load twice, the last
// run counts.
func WriteComparison(w io.Writer, results []*Result) error {
	var keys []runKey
	byKey := map[runKey]map[string]*Result{}
	for _, r := range results {
		k := keyOf(r)
		if byKey[k] == nil {
			byKey[k] = map[string]*Result{}
			keys = append(keys, k)
		}
		byKey[k][r.Target] = r
	}
	targets := Targets(results)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WORKLOAD\tMODE\tRATE\tCONC\tTARGET\tOPS/S\tP50 ms\tP99 ms\tERRORS\tRHIZON/TARGET\tP99 ms RHIZON | TARGET\t")
	for _, k := range keys {
		runs := byKey[k]
		base := runs[Baseline]
		rate := "-"
		if k.rate > 0 {
			rate = strconv.FormatFloat(k.rate, 'f', -1, 64)
		}
		for _, t := range targets {
			r := runs[t]
			if r == nil {
				continue
			}
			if label, _ := r.NotRun(); label != "" {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t-\t-\t-\tn/a\t-\t\n",
					k.workload, k.mode, rate, k.concurrency, t, label)
				continue
			}
			p50, p99 := "-", "-"
			if r.Ops > 0 {
				p50, p99 = fmtFloatMS(r.Latency.P50), fmtFloatMS(r.Latency.P99)
			}
			ratio, sideBySide := "-", "-"
			if base != nil && r != base && !notRun(base) {
				if r.Throughput > 0 {
					ratio = strconv.FormatFloat(base.Throughput/r.Throughput, 'f', 2, 64) + "x"
				}
				if base.Ops > 0 && r.Ops > 0 {
					sideBySide = fmtFloatMS(base.Latency.P99) + " | " + fmtFloatMS(r.Latency.P99)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.0f\t%s\t%s\t%d\t%s\t%s\t\n",
				k.workload, k.mode, rate, k.concurrency, t, r.Throughput, p50, p99, r.ErrorsTotal(), ratio, sideBySide)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "RHIZON/TARGET: rhizon's ops/s over the target's at the same load; P99: rhizon's, then the target's.")
	if err != nil {
		return err
	}
	return writeNotRun(w, results)
}

func notRun(r *Result) bool {
	label, _ := r.NotRun()
	return label != ""
}

// ReadJSON reads results written by WriteJSON (JSON Lines; blank lines
// are skipped). The histograms are not in the JSON, so Hist is nil.
func ReadJSON(r io.Reader) ([]*Result, error) {
	var out []*Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20) // a long run's per-second series makes a long line
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var res Result
		if err := json.Unmarshal(line, &res); err != nil {
			return nil, fmt.Errorf("bench: line %d: %w", n, err)
		}
		out = append(out, &res)
	}
	return out, sc.Err()
}
