package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/bench"
)

type benchFlags struct {
	target         string
	addr           string
	token          string
	tenant         string
	workspace      string
	workloads      string
	concurrency    string
	rates          string
	maxOutstanding int
	warmup         time.Duration
	duration       time.Duration
	entities       int
	payloadBytes   int
	zipfS          float64
	prefix         string
	commandActor   string
	conns          int
	opTimeout      time.Duration
	jsonFile       string
	progress       bool
	seed           uint64
	cpuProfile     string
}

func benchCmd() *cobra.Command {
	f := &benchFlags{}
	c := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a target with the benchmark workloads and print latency percentiles and throughput",
		Long: `Run workloads against a target and report throughput, latency percentiles
(p50, p90, p99, p99.9, max), conflicts, rejections and errors by kind.

Workloads: w1-occ (read the version, then a ~200-byte conditional update),
w1-command (one command per operation, decided on the server), hot (commands
on Zipf-distributed entities). --workload, --concurrency and --rate take
comma-separated lists; every combination runs, one after another, and one
table of all runs is printed at the end.

Without --rate the load is a closed loop of --concurrency workers. With
--rate it is an open loop: operations are due at fixed intervals and latency
is measured from when each was due, so queueing is not hidden; --concurrency
then caps the operations in flight and --max-outstanding the queued ones
(beyond it, sends are dropped and counted).

--json FILE writes one JSON object per run (JSON Lines) and, next to it, an
SVG latency-over-time plot per run and one percentile plot.

Exit status: 1 if any run got no answer to any operation (or setup failed),
2 for bad flags.`,
		Example: `  rhizon bench --addr 127.0.0.1:7400 --token $RHIZON_TOKEN --workload w1-occ,w1-command --concurrency 16,128 --json out/run.json
  rhizon bench --workload w1-command --concurrency 128 --rate 5000 --duration 30s`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := applyConfig(c.Flags()); err != nil {
				return &exitErr{exitUsage, err}
			}
			return runBench(c, f)
		},
	}
	fs := c.Flags()
	fs.StringVar(&f.target, "target", "rhizon", "system under test: rhizon")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:7400", "gateway gRPC addresses, comma-separated, used round-robin (RHIZON_ADDR)")
	fs.StringVar(&f.token, "token", "", "bearer token (RHIZON_TOKEN)")
	fs.StringVar(&f.tenant, "tenant", "", "tenant (default: the token's own)")
	fs.StringVar(&f.workspace, "workspace", "", "workspace (default: the token's own)")
	fs.StringVar(&f.workloads, "workload", "w1-occ", "workloads, comma-separated: "+strings.Join(bench.WorkloadNames, ", "))
	fs.StringVar(&f.concurrency, "concurrency", "128", "workers (operations in flight), comma-separated list for several runs")
	fs.StringVar(&f.rates, "rate", "", "open loop at this many operations/s (comma-separated list); empty: closed loop")
	fs.IntVar(&f.maxOutstanding, "max-outstanding", bench.DefaultMaxOutstanding, "open loop: operations queued or in flight before sends are dropped")
	fs.DurationVar(&f.warmup, "warmup", 5*time.Second, "load before the measuring window, not recorded")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "measuring window of each run")
	fs.IntVar(&f.entities, "entities", bench.DefaultEntities, "distinct entities the operations spread over")
	fs.IntVar(&f.payloadBytes, "payload-bytes", bench.DefaultPayloadBytes, "size of each update's JSON document")
	fs.Float64Var(&f.zipfS, "zipf-s", bench.DefaultZipfS, "Zipf exponent of the hot workload (> 1)")
	fs.StringVar(&f.prefix, "entity-prefix", bench.DefaultEntityPrefix, "prefix of the entity ids")
	fs.StringVar(&f.commandActor, "command", bench.CommandCounter, "what a rhizon command is: counter (cmd.counter.add) or kv (cmd.kv.update without expected version)")
	fs.IntVar(&f.conns, "conns", 0, "gRPC connections, spread over the addresses (default 2 per address)")
	fs.DurationVar(&f.opTimeout, "op-timeout", bench.DefaultOpTimeout, "deadline of one operation, client retries included")
	fs.StringVar(&f.jsonFile, "json", "", "write the runs as JSON Lines to this file, and SVG plots next to it")
	fs.BoolVar(&f.progress, "progress", true, "print a progress line every second on stderr")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the entity choices (0: random)")
	// The generator shares the machine with the server on a 2-core box:
	// its own CPU cost is part of every figure, so it must be measurable.
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	return c
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseInts(flag, s string) ([]int, error) {
	var out []int
	for _, p := range splitList(s) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s %q: want positive integers, comma-separated", flag, s)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s: empty", flag)
	}
	return out, nil
}

func parseRates(s string) ([]float64, error) {
	items := splitList(s)
	if len(items) == 0 {
		return []float64{0}, nil // closed loop
	}
	var out []float64
	for _, p := range items {
		r, err := strconv.ParseFloat(p, 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("--rate %q: want positive operations per second, comma-separated", s)
		}
		out = append(out, r)
	}
	return out, nil
}

func (f *benchFlags) plan() ([]bench.Workload, []int, []float64, error) {
	var wls []bench.Workload
	for _, name := range splitList(f.workloads) {
		w, err := bench.NewWorkload(name, f.entities)
		if err != nil {
			return nil, nil, nil, err
		}
		w.PayloadBytes, w.EntityPrefix = f.payloadBytes, f.prefix
		if w.ZipfS != 0 {
			w.ZipfS = f.zipfS
		}
		if err := w.Validate(); err != nil {
			return nil, nil, nil, err
		}
		wls = append(wls, w)
	}
	if len(wls) == 0 {
		return nil, nil, nil, errors.New("--workload: empty")
	}
	conc, err := parseInts("concurrency", f.concurrency)
	if err != nil {
		return nil, nil, nil, err
	}
	rates, err := parseRates(f.rates)
	if err != nil {
		return nil, nil, nil, err
	}
	if f.duration <= 0 || f.warmup < 0 {
		return nil, nil, nil, errors.New("--duration must be > 0 and --warmup >= 0")
	}
	return wls, conc, rates, nil
}

func (f *benchFlags) newTarget() (bench.Target, error) {
	switch f.target {
	case "rhizon":
		return bench.NewRhizon(bench.RhizonConfig{
			Addrs: splitList(f.addr), Token: f.token, Tenant: f.tenant, Workspace: f.workspace,
			Conns: f.conns, CommandActor: f.commandActor,
		})
	}
	// etcd and jetstream-kv come with the peer drivers (issue 4, item 3).
	return nil, &exitErr{exitUsage, fmt.Errorf("--target %q: the only target so far is rhizon", f.target)}
}

func runBench(c *cobra.Command, f *benchFlags) error {
	wls, conc, rates, err := f.plan()
	if err != nil {
		return &exitErr{exitUsage, err}
	}
	target, err := f.newTarget()
	if err != nil {
		var ee *exitErr
		if errors.As(err, &ee) {
			return err
		}
		return &exitErr{exitUsage, err}
	}
	defer func() { _ = target.Close() }()
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return &exitErr{exitError, err}
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return &exitErr{exitError, err}
		}
		defer pprof.StopCPUProfile()
	}
	// Ctrl-C ends the current run early; its partial result and those of
	// the finished runs are still reported.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stderr := c.ErrOrStderr()
	var results []*bench.Result
runs:
	for _, w := range wls {
		fmt.Fprintf(stderr, "setup %s on %s (%d entities)\n", w.Name, target.Name(), w.Entities)
		if err := target.Setup(ctx, w); err != nil {
			if ctx.Err() != nil {
				break
			}
			return &exitErr{exitError, fmt.Errorf("setup %s: %w", w.Name, err)}
		}
		for _, cc := range conc {
			for _, rate := range rates {
				cfg := bench.Config{
					Workload: w, Concurrency: cc, Rate: rate, MaxOutstanding: f.maxOutstanding,
					Warmup: f.warmup, Duration: f.duration, OpTimeout: f.opTimeout, Seed: f.seed,
				}
				if f.progress {
					cfg.Progress = stderr
				}
				res, err := bench.Run(ctx, target, cfg)
				if err != nil {
					return &exitErr{exitUsage, err}
				}
				res.Version, res.Revision = version, bench.Revision()
				results = append(results, res)
				if res.Interrupted {
					break runs
				}
			}
		}
	}
	out := c.OutOrStdout()
	fmt.Fprintln(out)
	if err := bench.WriteTable(out, results); err != nil {
		return err
	}
	if f.jsonFile != "" && len(results) > 0 {
		if err := writeBenchFiles(f.jsonFile, results); err != nil {
			return &exitErr{exitError, err}
		}
		fmt.Fprintf(stderr, "wrote %s and its plots\n", f.jsonFile)
	}
	if ctx.Err() != nil {
		return &exitErr{exitError, errors.New("interrupted")}
	}
	for _, r := range results {
		if r.Ops == 0 {
			return &exitErr{exitError, fmt.Errorf("%s c=%d: no operation succeeded (%d errors)", r.Workload, r.Concurrency, r.ErrorsTotal())}
		}
	}
	return nil
}

// writeBenchFiles writes the JSON Lines file and the plots next to it.
func writeBenchFiles(path string, results []*bench.Result) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	fh, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.WriteJSON(fh, results); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	_, err = bench.WritePlots(path, results)
	return err
}
