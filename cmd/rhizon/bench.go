package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/bench"
	"github.com/rhizon/rhizon/client"
)

type benchFlags struct {
	tls            tlsClientFlags
	targets        string
	peerAddrs      string
	peerOneProcess bool
	compare        string
	goals          string
	addr           string
	nats           string
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
	wasmModule     string
	wasmType       string
	route          string
	batchSubmits   bool
	unarySubmits   bool
	unaryGets      bool
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
on Zipf-distributed entities), hot-occ (w1-occ on them), ingress (a counter
command published to its shard's JetStream ingress subject on --nats, done
when its event is on the events stream), saga (an order placed through an
inventory and a payment, done when the order is completed) and wasm-counter
(w1-command's counter increment, decided by the counter compiled to
WebAssembly: --wasm-module, e.g. bin/counter.wasm from make wasm-examples,
deployed and activated as --wasm-type at setup unless the cluster has it;
the token must be allowed to deploy: an admin's, or a tenant's). --workload,
--concurrency and --rate take comma-separated lists; every combination runs,
one after another, and one table of all runs is printed at the end.

Without --rate the load is a closed loop of --concurrency workers. With
--rate it is an open loop: operations are due at fixed intervals and latency
is measured from when each was due, so queueing is not hidden; --concurrency
then caps the operations in flight and --max-outstanding the queued ones
(beyond it, sends are dropped and counted).

--route leader (the default) sends each rhizon command and linearizable read
straight to the gateway of the node leading its shard: the client learns the
leaders from the cluster (Status, then the gateways' hints) and connects to
every node, so no node forwards in steady state. --route any spreads the
operations round-robin over --addr instead, as a client unaware of shards
would; a node that does not lead the shard forwards the operation (on 3 nodes,
two thirds of them). --batch-submits (with --route leader) lets the client
coalesce the commands queued for one shard leader into SubmitBatch calls
(client.WithSubmitBatching). rhizon commands go over each connection's
SubmitStream (the client's default); --unary-submits sends one unary Submit
call each instead (client.WithUnarySubmits), to compare; so do reads (w1-occ's,
w3's) over GetStream, and --unary-gets (client.WithUnaryGets).

--json FILE writes one JSON object per run (JSON Lines) and, next to it, an
SVG latency-over-time plot per run and one percentile plot.

--target takes a list too: rhizon (the gateway at --addr) and the peers
etcd (3 members, Get + Txn on ModRevision), jetstream-kv (3 clustered NATS
servers, KV bucket with 3 replicas, Get + Update on the revision, default
fsync), jetstream-kv-sync (the same with sync always) and
jetstream-kv-sync-nodirect (the same with direct gets off, so that w1-occ's
read is answered by the stream's leader, not any replica; it runs w1-occ
only). A peer's servers are started each in a child process of its own
(rhizon bench-peer; --peer-one-process: all three in one) on free loopback
ports with fresh data directories, and stopped and removed after its runs;
with --peer-addrs the runs use servers already running instead. On a peer,
w1-command and hot are unconditional puts of the ~200-byte document; ingress,
saga and wasm-counter do not apply to a peer and are listed as skipped. With
more than one target, a comparison table follows: per load, each target's
throughput and latency and Rhizon's throughput ratio to it.
--compare FILE,... prints the same tables from earlier --json files.
--goals cluster|dev adds whether the runs meet the performance goals of a
3-node cluster or of one rhizon dev node.

Exit status: 1 if any run got no answer to any operation (or setup failed),
2 for bad flags.`,
		Example: `  rhizon bench --addr 127.0.0.1:7400 --token $RHIZON_TOKEN --workload w1-occ,w1-command --concurrency 16,128 --json out/run.json
  rhizon bench --target rhizon,etcd,jetstream-kv-sync --workload w1-occ --concurrency 128 --duration 10s
  rhizon bench --workload ingress,saga --nats nats://127.0.0.1:4222 --concurrency 16,128
  rhizon bench --compare out/rhizon.json,out/etcd.json
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
	fs.StringVar(&f.targets, "target", "rhizon", "systems under test, comma-separated, run one after another: rhizon, "+strings.Join(bench.PeerKinds, ", "))
	fs.StringVar(&f.peerAddrs, "peer-addrs", "", "client URLs of an already running peer cluster (one peer target); empty: start one")
	fs.BoolVar(&f.peerOneProcess, "peer-one-process", false, "run a started peer's 3 servers in one process instead of one process each (Rhizon's nodes are one process each)")
	fs.StringVar(&f.compare, "compare", "", "run nothing: print the table and comparison of these --json files, comma-separated")
	fs.StringVar(&f.goals, "goals", "", "also print whether the runs meet the performance goals of a 3-node cluster (cluster) or of one node (dev)")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:7400", "gateway gRPC addresses, comma-separated, used round-robin (RHIZON_ADDR)")
	fs.StringVar(&f.nats, "nats", "", "the nodes' NATS client URLs, comma-separated (the node banner's NATS line): the ingress workload publishes there")
	fs.StringVar(&f.token, "token", "", "bearer token (RHIZON_TOKEN)")
	fs.StringVar(&f.tenant, "tenant", "", "tenant (default: the token's own)")
	fs.StringVar(&f.workspace, "workspace", "", "workspace (default: the token's own)")
	f.tls.register(fs)
	fs.StringVar(&f.workloads, "workload", "w1-occ", "workloads, comma-separated: "+strings.Join(bench.WorkloadNames, ", "))
	fs.StringVar(&f.concurrency, "concurrency", "128", "workers (operations in flight), comma-separated list for several runs")
	fs.StringVar(&f.rates, "rate", "", "open loop at this many operations/s (comma-separated list); empty: closed loop")
	fs.IntVar(&f.maxOutstanding, "max-outstanding", bench.DefaultMaxOutstanding, "open loop: operations queued or in flight before sends are dropped")
	fs.DurationVar(&f.warmup, "warmup", 5*time.Second, "load before the measuring window, not recorded")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "measuring window of each run")
	fs.IntVar(&f.entities, "entities", 0, fmt.Sprintf("distinct entities the operations spread over (saga: inventories, and as many payments); 0: %d, saga %d",
		bench.DefaultEntities, bench.DefaultSagaEntities))
	fs.IntVar(&f.payloadBytes, "payload-bytes", bench.DefaultPayloadBytes, "size of each update's JSON document")
	fs.Float64Var(&f.zipfS, "zipf-s", bench.DefaultZipfS, "Zipf exponent of the hot workload (> 1)")
	fs.StringVar(&f.prefix, "entity-prefix", bench.DefaultEntityPrefix, "prefix of the entity ids")
	fs.StringVar(&f.commandActor, "command", bench.CommandCounter, "what a rhizon command is: counter (cmd.counter.add) or kv (cmd.kv.update without expected version)")
	fs.StringVar(&f.wasmModule, "wasm-module", "", "the WebAssembly counter the wasm-counter workload deploys (make wasm-examples builds bin/counter.wasm)")
	fs.StringVar(&f.wasmType, "wasm-type", bench.DefaultWasmType, "the actor type wasm-counter deploys --wasm-module as, and sends to")
	fs.StringVar(&f.route, "route", bench.RouteLeader, "where rhizon operations go: leader (straight to the shard leader's gateway) or any (round-robin over --addr; the node forwards)")
	fs.BoolVar(&f.batchSubmits, "batch-submits", false, "rhizon with --route leader: coalesce the submits queued for one shard leader into SubmitBatch calls")
	fs.BoolVar(&f.unarySubmits, "unary-submits", false, "rhizon: one unary Submit call per command instead of the connection's SubmitStream (the client's default)")
	fs.BoolVar(&f.unaryGets, "unary-gets", false, "rhizon: one unary Get call per read instead of the connection's GetStream (the client's default)")
	fs.IntVar(&f.conns, "conns", 0, "client connections: rhizon spreads them over --addr (default 2 per address; with --route leader, that many per node), a peer over its servers (default 3)")
	fs.DurationVar(&f.opTimeout, "op-timeout", bench.DefaultOpTimeout, "deadline of one operation, client retries included")
	fs.StringVar(&f.jsonFile, "json", "", "write the runs as JSON Lines to this file, and SVG plots next to it")
	fs.BoolVar(&f.progress, "progress", true, "print a progress line every second on stderr")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the entity choices (0: random)")
	// The generator shares the machine with the server on a 2-core box:
	// its own CPU cost is part of every figure, so it must be measurable.
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	return c
}

// benchClientOptions are the Go client's options the flags choose.
func benchClientOptions(f *benchFlags) []client.Option {
	opts := []client.Option{client.WithSubmitBatching(f.batchSubmits)}
	if f.unarySubmits {
		opts = append(opts, client.WithUnarySubmits())
	}
	if f.unaryGets {
		opts = append(opts, client.WithUnaryGets())
	}
	return opts
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
	if f.wasmModule == "" && slices.ContainsFunc(wls, func(w bench.Workload) bool { return w.Op == bench.OpWasm }) &&
		slices.Contains(splitList(f.targets), bench.Baseline) {
		return nil, nil, nil, errors.New("--workload wasm-counter needs --wasm-module FILE.wasm, the example counter: make wasm-examples builds bin/counter.wasm")
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

// targetList parses --target and checks it against --peer-addrs.
func (f *benchFlags) targetList() ([]string, error) {
	names := splitList(f.targets)
	if len(names) == 0 {
		return nil, errors.New("--target: empty")
	}
	peers := 0
	for _, n := range names {
		switch {
		case n == bench.Baseline:
		case bench.IsPeer(n):
			peers++
		default:
			return nil, fmt.Errorf("--target %q: known targets are rhizon, %s", n, strings.Join(bench.PeerKinds, ", "))
		}
	}
	if f.route != bench.RouteLeader && f.route != bench.RouteAny {
		return nil, fmt.Errorf("--route %q: use %s or %s", f.route, bench.RouteLeader, bench.RouteAny)
	}
	if f.peerAddrs != "" && peers != 1 {
		return nil, errors.New("--peer-addrs names the servers of exactly one peer target")
	}
	return names, nil
}

// openTarget connects to the named target, first starting its servers in
// a `rhizon bench-peer` child process when it is a peer without
// --peer-addrs. stop undoes both.
func (f *benchFlags) openTarget(ctx context.Context, stderr io.Writer, name string) (t bench.Target, stop func(), err error) {
	if name == bench.Baseline {
		natsTLS, terr := f.tls.config()
		if terr != nil {
			return nil, nil, terr
		}
		var topts []client.Option
		if natsTLS != nil {
			topts = []client.Option{client.WithTLS(natsTLS)}
		}
		var module []byte
		if f.wasmModule != "" {
			if module, err = os.ReadFile(f.wasmModule); err != nil {
				return nil, nil, fmt.Errorf("--wasm-module: %w", err)
			}
		}
		t, err = bench.NewRhizon(bench.RhizonConfig{
			Addrs: splitList(f.addr), Token: f.token, Tenant: f.tenant, Workspace: f.workspace,
			Conns: f.conns, CommandActor: f.commandActor, NATS: splitList(f.nats), NATSTLS: natsTLS, Route: f.route,
			ClientOptions: append(benchClientOptions(f), topts...), WasmModule: module, WasmType: f.wasmType,
		})
		if err != nil {
			return nil, nil, err
		}
		return t, func() { _ = t.Close() }, nil
	}
	urls := splitList(f.peerAddrs)
	var peers *bench.Peers
	if len(urls) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, nil, err
		}
		how := "3 rhizon bench-peer processes"
		if f.peerOneProcess {
			how = "3 servers in one rhizon bench-peer process"
		}
		fmt.Fprintf(stderr, "starting %s (%s)\n", name, how)
		began := time.Now()
		if peers, err = bench.StartPeers(ctx, exe, name, f.peerOneProcess); err != nil {
			return nil, nil, err
		}
		urls = peers.URLs
		fmt.Fprintf(stderr, "%s ready in %v: %s (%s)\n", name, time.Since(began).Round(time.Millisecond),
			strings.Join(urls, ","), pidList(peers.PIDs()))
	}
	t, err = bench.NewPeerTarget(name, bench.PeerConfig{URLs: urls, Conns: f.conns})
	if err != nil {
		if peers != nil {
			_ = peers.Stop()
		}
		return nil, nil, err
	}
	return t, func() {
		_ = t.Close()
		if peers != nil {
			if err := peers.Stop(); err != nil {
				fmt.Fprintf(stderr, "stop %s: %v\n", name, err)
			}
		}
	}, nil
}

// pidList prints process ids as "pid 1, pid 2", the form tests look for.
func pidList(pids []int) string {
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = fmt.Sprintf("pid %d", p)
	}
	return strings.Join(s, ", ")
}

// runCompare prints the tables of earlier --json files.
func runCompare(c *cobra.Command, f *benchFlags) error {
	files := f.compare
	var results []*bench.Result
	for _, name := range splitList(files) {
		fh, err := os.Open(name)
		if err != nil {
			return &exitErr{exitError, err}
		}
		rs, err := bench.ReadJSON(fh)
		fh.Close()
		if err != nil {
			return &exitErr{exitError, fmt.Errorf("%s: %w", name, err)}
		}
		results = append(results, rs...)
	}
	if len(results) == 0 {
		return &exitErr{exitError, fmt.Errorf("--compare %s: no runs", files)}
	}
	return writeTables(c.OutOrStdout(), results, f.goals)
}

// writeTables prints every run, then, when several targets ran, the
// comparison, and with goals ("cluster" or "dev") the goals' table.
func writeTables(out io.Writer, results []*bench.Result, goals string) error {
	fmt.Fprintln(out)
	if err := bench.WriteTable(out, results); err != nil {
		return err
	}
	if len(bench.Targets(results)) >= 2 {
		fmt.Fprintln(out)
		if err := bench.WriteComparison(out, results); err != nil {
			return err
		}
	}
	if goals == "" {
		return nil
	}
	fmt.Fprintln(out)
	return bench.WriteGoals(out, results, goals)
}

func runBench(c *cobra.Command, f *benchFlags) error {
	if f.goals != "" && f.goals != bench.GoalsCluster && f.goals != bench.GoalsDev {
		return &exitErr{exitUsage, fmt.Errorf("--goals %q: use %s (3 nodes) or %s (one node)", f.goals, bench.GoalsCluster, bench.GoalsDev)}
	}
	if f.compare != "" {
		return runCompare(c, f)
	}
	wls, conc, rates, err := f.plan()
	if err != nil {
		return &exitErr{exitUsage, err}
	}
	targets, err := f.targetList()
	if err != nil {
		return &exitErr{exitUsage, err}
	}
	// The generator shares the box with the nodes it measures: every
	// collection it skips is CPU they get (GC was 10% of its profile at
	// GOGC 100). Its heap is small: the node's setting serves.
	tuneGC(cgroupMemoryMax)
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
	// Before any load: a figure means little without the machine's speed,
	// which changes from day to day on a shared virtual machine.
	cal := bench.CalibrateMachine()
	fmt.Fprintf(stderr, "machine: %d CPUs; one core hashes %.0f MB/s (SHA-256); a random memory read takes %.0f ns\n",
		runtime.NumCPU(), cal.SHA256MBps, cal.MemLatencyNs)
	var results []*bench.Result
	var runErr error
	for _, name := range targets {
		rs, err := f.runTarget(ctx, stderr, name, wls, conc, rates)
		results = append(results, rs...)
		if err != nil {
			runErr = err
			break
		}
		if ctx.Err() != nil {
			break
		}
	}
	// What ran is reported (tables, and the JSON a later --compare reads)
	// whatever stopped the rest.
	if len(results) > 0 {
		if err := writeTables(c.OutOrStdout(), results, f.goals); err != nil && runErr == nil {
			runErr = err
		}
	}
	if f.jsonFile != "" && len(results) > 0 {
		if err := writeBenchFiles(f.jsonFile, results); err != nil {
			return &exitErr{exitError, err}
		}
		fmt.Fprintf(stderr, "wrote %s and its plots\n", f.jsonFile)
	}
	if runErr != nil {
		return runErr
	}
	if ctx.Err() != nil {
		return &exitErr{exitError, errors.New("interrupted")}
	}
	for _, r := range results {
		if r.SetupError != "" {
			return &exitErr{exitError, fmt.Errorf("setup %s on %s: %s", r.Workload, r.Target, r.SetupError)}
		}
		if r.Ops == 0 && r.Skipped == "" {
			return &exitErr{exitError, fmt.Errorf("%s on %s c=%d: no operation succeeded (%d errors)", r.Workload, r.Target, r.Concurrency, r.ErrorsTotal())}
		}
	}
	return nil
}

// runTarget runs every workload, concurrency and rate against one target,
// with the target's servers up only for its own runs. A workload the
// target cannot run (ingress, saga or wasm-counter on a peer) gets skipped results, which
// keep its rows in the tables; a peer none of whose workloads apply is not
// even started. A workload whose setup fails gets failed results and the
// next workload runs (the command exits 1 at the end).
func (f *benchFlags) runTarget(ctx context.Context, stderr io.Writer, name string, wls []bench.Workload, conc []int, rates []float64) ([]*bench.Result, error) {
	var results []*bench.Result
	notRun := func(w bench.Workload, mk func(cfg bench.Config) *bench.Result) {
		for _, cc := range conc {
			for _, rate := range rates {
				res := mk(bench.Config{Workload: w, Concurrency: cc, Rate: rate})
				res.Version, res.Revision = version, bench.Revision()
				results = append(results, res)
			}
		}
	}
	skip := func(w bench.Workload, why string) {
		fmt.Fprintf(stderr, "skip %s on %s: %s\n", w.Name, name, why)
		notRun(w, func(cfg bench.Config) *bench.Result { return bench.SkippedResult(name, cfg, why) })
	}
	if bench.IsPeer(name) && !slices.ContainsFunc(wls, func(w bench.Workload) bool { return bench.PeerUnsupported(name, w) == "" }) {
		for _, w := range wls {
			skip(w, bench.PeerUnsupported(name, w))
		}
		return results, nil
	}
	target, stop, err := f.openTarget(ctx, stderr, name)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, &exitErr{exitError, fmt.Errorf("target %s: %w", name, err)}
	}
	defer stop()
	for _, w := range wls {
		if why := bench.Unsupported(target, w); why != "" {
			skip(w, why)
			continue
		}
		fmt.Fprintf(stderr, "setup %s on %s (%d entities)\n", w.Name, target.Name(), w.Entities)
		if err := target.Setup(ctx, w); err != nil {
			if ctx.Err() != nil {
				return results, nil
			}
			fmt.Fprintf(stderr, "setup %s on %s failed: %v\n", w.Name, name, err)
			notRun(w, func(cfg bench.Config) *bench.Result { return bench.SetupFailedResult(name, cfg, err) })
			continue
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
					return results, &exitErr{exitUsage, err}
				}
				res.Version, res.Revision = version, bench.Revision()
				results = append(results, res)
				if res.Interrupted {
					return results, nil
				}
			}
		}
	}
	return results, nil
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
