package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what one run measured. It is written as one JSON object per
// run, so that runs from different invocations, machines and versions can
// be collected into one file and compared; every field a comparison needs
// (what ran, where, which build) is in the object itself.
type Result struct {
	Workload       string  `json:"workload"`
	Target         string  `json:"target"`
	Mode           string  `json:"mode"` // closed or open
	Concurrency    int     `json:"concurrency"`
	Rate           float64 `json:"rate,omitempty"`            // open loop: intended ops/s
	MaxOutstanding int     `json:"max_outstanding,omitempty"` // open loop
	Entities       int     `json:"entities"`
	ZipfS          float64 `json:"zipf_s,omitempty"`
	PayloadBytes   int     `json:"payload_bytes"`
	Warmup         float64 `json:"warmup_s"`
	// Duration is the measuring window in seconds (shorter than asked
	// when Interrupted).
	Duration float64   `json:"duration_s"`
	Start    time.Time `json:"start"`
	// Ops counts the operations of the window that got an answer: OK +
	// Conflicts + Rejected. Errors and drops are not operations.
	Ops          uint64            `json:"ops"`
	OK           uint64            `json:"ok"`
	Conflicts    uint64            `json:"conflicts"`
	Rejected     uint64            `json:"rejected"`
	Errors       map[string]uint64 `json:"errors"`                  // by ErrorKind name, all kinds present
	ErrorSamples map[string]string `json:"error_samples,omitempty"` // the first error of each kind
	Dropped      uint64            `json:"dropped"`                 // open loop: sends over MaxOutstanding
	// Throughput is Ops per second of the window.
	Throughput float64 `json:"throughput"`
	// Latency covers the answered operations: an error says nothing about
	// how fast the target works, and a fast failure would flatter it.
	Latency     LatencyMS `json:"latency_ms"`
	PerSecond   []Second  `json:"per_second"`
	Interrupted bool      `json:"interrupted,omitempty"`
	// Skipped says why the run did not happen (the target cannot run the
	// workload), SetupError that it did not because the workload's setup
	// failed; such a result has no figures.
	Skipped    string `json:"skipped,omitempty"`
	SetupError string `json:"setup_error,omitempty"`
	// Version is the rhizon binary's version, Revision the VCS commit it
	// was built from (with "+dirty" for uncommitted changes).
	Version  string  `json:"version"`
	Revision string  `json:"revision,omitempty"`
	Machine  Machine `json:"machine"`

	// Hist holds every latency of the window, for the percentile plot.
	Hist *Histogram `json:"-"`
}

// LatencyMS are the latency figures in milliseconds.
type LatencyMS struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Second is one second of the window: the operations that started in it
// and their latency.
type Second struct {
	T   int     `json:"t"`
	Ops uint64  `json:"ops"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
}

// Machine describes where the load generator ran: on a shared 2-core box
// the generator competes with the server, and a figure means little
// without it.
type Machine struct {
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"num_cpu"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	GoVersion  string `json:"go_version"`
	Hostname   string `json:"hostname,omitempty"`
	// Calibration is the machine's speed before the runs, when the process
	// measured it (CalibrateMachine).
	Calibration *Calibration `json:"calibration,omitempty"`
}

// ThisMachine describes the running process's machine.
func ThisMachine() Machine {
	host, _ := os.Hostname()
	return Machine{
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		GoVersion: runtime.Version(), Hostname: host, Calibration: calibration.Load(),
	}
}

// Revision returns the VCS commit the binary was built from, from the Go
// build info ("" when built outside a repository or with -buildvcs=false).
func Revision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "+dirty"
	}
	return rev
}

// NotRun tells a result that has no figures: label "skipped" (the target
// cannot run the workload) or "failed" (its setup failed) and why; "" for
// a run that happened.
func (r *Result) NotRun() (label, why string) {
	switch {
	case r.Skipped != "":
		return "skipped", r.Skipped
	case r.SetupError != "":
		return "failed", "setup failed: " + r.SetupError
	}
	return "", ""
}

// writeNotRun prints one note per workload and target that did not run.
func writeNotRun(w io.Writer, results []*Result) error {
	seen := map[string]bool{}
	for _, r := range results {
		label, why := r.NotRun()
		if k := r.Workload + " " + r.Target; label != "" && !seen[k] {
			seen[k] = true
			if _, err := fmt.Fprintf(w, "%s on %s %s: %s\n", r.Workload, r.Target, label, strings.TrimPrefix(why, "setup failed: ")); err != nil {
				return err
			}
		}
	}
	return nil
}

// ErrorsTotal is the number of failed operations of every kind.
func (r *Result) ErrorsTotal() uint64 {
	var n uint64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msOf(p Percentiles) LatencyMS {
	return LatencyMS{P50: ms(p.P50), P90: ms(p.P90), P99: ms(p.P99), P999: ms(p.P999), Max: ms(p.Max), Mean: ms(p.Mean)}
}

// fmtMS formats a latency in milliseconds with three significant digits
// where it matters (0.412ms, 12.3ms, 1234ms).
func fmtMS(d time.Duration) string { return fmtFloatMS(ms(d)) + "ms" }

func fmtFloatMS(v float64) string {
	switch {
	case v < 1:
		return strconv.FormatFloat(v, 'f', 3, 64)
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// WriteTable prints the results as one aligned table, one row per run,
// followed by the error kinds and first error messages of the runs that had
// errors.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WORKLOAD\tTARGET\tMODE\tCONC\tRATE\tOPS\tOPS/S\tP50 ms\tP90 ms\tP99 ms\tP99.9 ms\tMAX ms\tCONFLICTS\tREJECTED\tERRORS\tDROPPED\t")
	for _, r := range results {
		rate := "-"
		if r.Rate > 0 {
			rate = strconv.FormatFloat(r.Rate, 'f', -1, 64)
		}
		if label, _ := r.NotRun(); label != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t\n",
				r.Workload, r.Target, r.Mode, r.Concurrency, rate, label)
			continue
		}
		l := r.Latency
		lat := []string{"-", "-", "-", "-", "-"} // no answered operation: no latency
		if r.Ops > 0 {
			lat = []string{fmtFloatMS(l.P50), fmtFloatMS(l.P90), fmtFloatMS(l.P99), fmtFloatMS(l.P999), fmtFloatMS(l.Max)}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%.0f\t%s\t%d\t%d\t%d\t%d\t\n",
			r.Workload, r.Target, r.Mode, r.Concurrency, rate, r.Ops, r.Throughput, strings.Join(lat, "\t"),
			r.Conflicts, r.Rejected, r.ErrorsTotal(), r.Dropped)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeNotRun(w, results); err != nil {
		return err
	}
	for _, r := range results {
		if label, _ := r.NotRun(); label != "" || (r.ErrorsTotal() == 0 && !r.Interrupted) {
			continue
		}
		var parts []string
		for _, k := range ErrorKinds {
			if n := r.Errors[k.String()]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
		}
		note := ""
		if r.Interrupted {
			note = fmt.Sprintf(" (interrupted after %.1fs)", r.Duration)
		}
		fmt.Fprintf(w, "%s %s c=%d%s: %s\n", r.Workload, r.Mode, r.Concurrency, note, strings.Join(parts, ", "))
		for _, k := range ErrorKinds {
			if s := r.ErrorSamples[k.String()]; s != "" {
				fmt.Fprintf(w, "  first %s: %s\n", k, s)
			}
		}
	}
	return nil
}

// WriteJSON writes each result as one JSON object on a line of its own
// (JSON Lines), so that runs append to a file and stream through jq.
func WriteJSON(w io.Writer, results []*Result) error {
	enc := json.NewEncoder(w)
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}
