package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultOpTimeout        = 10 * time.Second
	DefaultMaxOutstanding   = 10_000
	DefaultProgressInterval = time.Second
)

// Config is one run: a workload driven in a closed or an open loop.
type Config struct {
	Workload Workload
	// Concurrency is the number of workers, each with at most one
	// operation in flight. In a closed loop it is the load; in an open loop
	// it caps the operations in flight, and intended sends wait in a queue
	// for a free worker (their wait counts in their latency).
	Concurrency int
	// Rate > 0 runs an open loop at this many operations per second; 0 runs
	// a closed loop.
	Rate float64
	// MaxOutstanding bounds, in an open loop, the operations queued or in
	// flight. An intended send that finds the bound reached is dropped and
	// counted: a saturated target then costs memory no more than this, and
	// the drops tell that the rate was not sustained. 0: DefaultMaxOutstanding.
	MaxOutstanding int
	// Warmup runs the load without recording it (connections, caches,
	// Raft pipelines and the Go scheduler settle), then Duration is the
	// measuring window.
	Warmup   time.Duration
	Duration time.Duration
	// OpTimeout bounds one operation, the target client's retries included.
	// 0: DefaultOpTimeout.
	OpTimeout time.Duration
	// Progress receives a line per ProgressInterval (default 1s); nil
	// prints nothing.
	Progress         io.Writer
	ProgressInterval time.Duration
	// Seed makes the entity choices reproducible; 0 picks a random seed.
	Seed uint64

	// observe, when set (tests), sees every finished operation.
	observe func(sample)
}

// sample is one finished operation, as the test hook sees it.
type sample struct {
	seq     uint64
	start   time.Time // intended send time in an open loop
	latency time.Duration
	outcome Outcome
	err     error
}

func (c *Config) normalize() error {
	if err := c.Workload.Validate(); err != nil {
		return err
	}
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("bench: concurrency must be >= 1, got %d", c.Concurrency)
	case c.Rate < 0:
		return fmt.Errorf("bench: rate must be >= 0, got %g", c.Rate)
	case c.Duration <= 0:
		return fmt.Errorf("bench: duration must be > 0, got %v", c.Duration)
	case c.Warmup < 0:
		return fmt.Errorf("bench: warmup must be >= 0, got %v", c.Warmup)
	case c.MaxOutstanding < 0:
		return fmt.Errorf("bench: max outstanding must be >= 0, got %d", c.MaxOutstanding)
	}
	if c.MaxOutstanding == 0 {
		c.MaxOutstanding = DefaultMaxOutstanding
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = DefaultOpTimeout
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64() | 1
	}
	return nil
}

// Mode is "closed" or "open".
func (c *Config) Mode() string {
	if c.Rate > 0 {
		return "open"
	}
	return "closed"
}

// Label names the run in progress lines and plots.
func (c *Config) Label(target string) string {
	s := fmt.Sprintf("%s %s %s c=%d", c.Workload.Name, target, c.Mode(), c.Concurrency)
	if c.Rate > 0 {
		s += fmt.Sprintf(" rate=%g/s", c.Rate)
	}
	return s
}

// Run drives t with cfg's workload and returns what it measured. The caller
// has called t.Setup for the workload. Canceling ctx ends the run early: the
// Result covers the part of the window that ran and says Interrupted, and
// the operations cut short by the cancellation are not counted.
//
// An operation belongs to the window in which it started (in an open loop,
// in which it was meant to start), so the slow operations still in flight
// when the window closes are waited for and counted, not cut off the tail.
func Run(ctx context.Context, t Target, cfg Config) (*Result, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if why := Unsupported(t, cfg.Workload); why != "" {
		return nil, fmt.Errorf("bench: %s on %s: %s", cfg.Workload.Name, t.Name(), why)
	}
	now := time.Now()
	r := &runner{
		t: t, cfg: cfg, ctx: ctx,
		t0:     now,
		window: now.Add(cfg.Warmup),
		end:    now.Add(cfg.Warmup + cfg.Duration),
		secs:   make([]*Histogram, int((cfg.Duration+time.Second-1)/time.Second)),
	}
	progressDone := make(chan struct{})
	stopProgress := make(chan struct{})
	go func() {
		defer close(progressDone)
		r.progress(stopProgress)
	}()
	if cfg.Rate > 0 {
		r.openLoop()
	} else {
		r.closedLoop()
	}
	close(stopProgress)
	<-progressDone
	return r.result(), nil
}

type runner struct {
	t   Target
	cfg Config
	ctx context.Context

	t0, window, end time.Time
	seq             atomic.Uint64

	// progress counters: every finished operation, warm-up included.
	done, failed atomic.Uint64

	mu       sync.Mutex // guards the fields below
	secs     []*Histogram
	outcomes [3]uint64
	errs     [numKinds]uint64
	firstErr [numKinds]string
	dropped  uint64
}

// op performs one operation of the workload.
func (r *runner) op(entity int, seq uint64) (Outcome, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.OpTimeout)
	defer cancel()
	e := r.cfg.Workload.Entity(entity)
	switch r.cfg.Workload.Op {
	case OpOCC:
		v, err := r.t.ReadVersion(ctx, e)
		if err != nil {
			return 0, err
		}
		return r.t.ConditionalUpdate(ctx, e, v, r.cfg.Workload.Payload(seq))
	case OpIngress:
		return r.t.(IngressTarget).Ingress(ctx, e)
	case OpSaga:
		w := r.cfg.Workload
		return r.t.(SagaTarget).Saga(ctx, w.SagaInventory(entity), w.SagaPayment(entity))
	case OpWasm:
		return r.t.(WasmTarget).WasmCommand(ctx, e)
	default:
		return r.t.Command(ctx, e, r.cfg.Workload.Payload(seq))
	}
}

// finish records one operation that started (or was meant to) at start.
func (r *runner) finish(seq uint64, start time.Time, lat time.Duration, out Outcome, err error) {
	if r.ctx.Err() != nil {
		return // cut short by the caller, not by the target
	}
	r.done.Add(1)
	if err != nil {
		r.failed.Add(1)
	}
	if r.cfg.observe != nil {
		r.cfg.observe(sample{seq: seq, start: start, latency: lat, outcome: out, err: err})
	}
	if start.Before(r.window) || !start.Before(r.end) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		k := KindOf(err)
		r.errs[k]++
		if r.firstErr[k] == "" {
			r.firstErr[k] = err.Error()
		}
		return
	}
	if int(out) < len(r.outcomes) {
		r.outcomes[out]++
	}
	i := min(int(start.Sub(r.window)/time.Second), len(r.secs)-1)
	if r.secs[i] == nil {
		r.secs[i] = &Histogram{}
	}
	r.secs[i].Record(lat)
}

// closedLoop runs Concurrency workers, each sending its next operation as
// soon as the previous one returned, until the window ends.
func (r *runner) closedLoop() {
	var wg sync.WaitGroup
	for id := range r.cfg.Concurrency {
		pick := r.cfg.Workload.newPicker(r.cfg.Seed, uint64(id))
		wg.Go(func() {
			for r.ctx.Err() == nil {
				start := time.Now()
				if !start.Before(r.end) {
					return
				}
				seq := r.seq.Add(1)
				out, err := r.op(pick(), seq)
				r.finish(seq, start, time.Since(start), out, err)
			}
		})
	}
	wg.Wait()
}

// job is one intended send of the open loop.
type job struct {
	seq      uint64
	intended time.Time
	entity   int
}

// openLoop sends at the configured rate whatever the target does: send i
// is due at t0 + i/Rate. A dispatcher that falls behind (a GC pause, a
// descheduled goroutine) sends the overdue operations at once with their
// original intended times, and every latency is measured from the intended
// time, so time spent waiting for a worker or for the dispatcher is counted
// as the queueing delay a real client would have seen.
func (r *runner) openLoop() {
	queue := make(chan job, r.cfg.MaxOutstanding)
	var outstanding atomic.Int64
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Go(func() {
			for j := range queue {
				out, err := r.op(j.entity, j.seq)
				lat := time.Since(j.intended)
				outstanding.Add(-1)
				r.finish(j.seq, j.intended, lat, out, err)
			}
		})
	}
	pick := r.cfg.Workload.newPicker(r.cfg.Seed, 0)
	interval := float64(time.Second) / r.cfg.Rate
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
dispatch:
	for i := uint64(0); ; i++ {
		intended := r.t0.Add(time.Duration(float64(i) * interval))
		if !intended.Before(r.end) {
			break
		}
		if d := time.Until(intended); d > 0 {
			timer.Reset(d)
			select {
			case <-r.ctx.Done():
				break dispatch
			case <-timer.C:
			}
		}
		if outstanding.Load() >= int64(r.cfg.MaxOutstanding) {
			if !intended.Before(r.window) {
				r.mu.Lock()
				r.dropped++
				r.mu.Unlock()
			}
			continue
		}
		outstanding.Add(1)
		queue <- job{seq: r.seq.Add(1), intended: intended, entity: pick()}
	}
	close(queue)
	wg.Wait()
}

// merged returns the histogram of the window so far. Callers hold r.mu.
func (r *runner) merged() *Histogram {
	h := &Histogram{}
	for _, s := range r.secs {
		h.Merge(s)
	}
	return h
}

// progress prints a line per interval until stop is closed: operations per
// second over the last interval, p99 of the window so far, errors.
func (r *runner) progress(stop <-chan struct{}) {
	if r.cfg.Progress == nil {
		return
	}
	tick := time.NewTicker(r.cfg.ProgressInterval)
	defer tick.Stop()
	label := r.cfg.Label(r.t.Name())
	last, lastDone := time.Now(), uint64(0)
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			done := r.done.Load()
			rate := float64(done-lastDone) / now.Sub(last).Seconds()
			last, lastDone = now, done
			if now.Before(r.window) {
				fmt.Fprintf(r.cfg.Progress, "%s  warm-up %4.0fs  %8.0f ops/s  errors %d\n",
					label, now.Sub(r.t0).Seconds(), rate, r.failed.Load())
				continue
			}
			r.mu.Lock()
			h := r.merged()
			p99 := "-"
			if h.Count() > 0 {
				p99 = fmtMS(h.Quantile(0.99))
			}
			conflicts, dropped := r.outcomes[Conflict], r.dropped
			var errs uint64
			for _, e := range r.errs {
				errs += e
			}
			r.mu.Unlock()
			elapsed := min(now.Sub(r.window), r.cfg.Duration)
			fmt.Fprintf(r.cfg.Progress, "%s  %4.0fs/%.0fs  %8.0f ops/s  p99 %s  conflicts %d  errors %d  dropped %d\n",
				label, elapsed.Seconds(), r.cfg.Duration.Seconds(), rate, p99, conflicts, errs, dropped)
		}
	}
}

// result assembles the Result once every worker has returned.
func (r *runner) result() *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.merged()
	window := r.cfg.Duration
	interrupted := errors.Is(r.ctx.Err(), context.Canceled) || errors.Is(r.ctx.Err(), context.DeadlineExceeded)
	if interrupted {
		// Count only the part of the window that ran.
		window = min(max(time.Since(r.window), 0), r.cfg.Duration)
	}
	w := r.cfg.Workload
	res := &Result{
		Workload: w.Name, Target: r.t.Name(), Mode: r.cfg.Mode(), Concurrency: r.cfg.Concurrency,
		Rate: r.cfg.Rate, Entities: w.Entities, ZipfS: w.ZipfS, PayloadBytes: w.PayloadBytes,
		Warmup: r.cfg.Warmup.Seconds(), Duration: window.Seconds(), Start: r.t0.UTC(),
		OK: r.outcomes[OK], Conflicts: r.outcomes[Conflict], Rejected: r.outcomes[Rejected],
		Errors: map[string]uint64{}, Dropped: r.dropped, Interrupted: interrupted,
		Latency: msOf(h.Percentiles()), Machine: ThisMachine(), Hist: h,
	}
	if r.cfg.Rate > 0 {
		res.MaxOutstanding = r.cfg.MaxOutstanding
	}
	res.Ops = res.OK + res.Conflicts + res.Rejected
	if window > 0 {
		res.Throughput = float64(res.Ops) / window.Seconds()
	}
	for _, k := range ErrorKinds {
		res.Errors[k.String()] = r.errs[k]
		if r.firstErr[k] != "" {
			if res.ErrorSamples == nil {
				res.ErrorSamples = map[string]string{}
			}
			res.ErrorSamples[k.String()] = r.firstErr[k]
		}
	}
	for i, s := range r.secs {
		if time.Duration(i)*time.Second >= window {
			break
		}
		sec := Second{T: i}
		if s != nil {
			sec.Ops, sec.P50, sec.P99 = s.Count(), ms(s.Quantile(0.5)), ms(s.Quantile(0.99))
		}
		res.PerSecond = append(res.PerSecond, sec)
	}
	return res
}
