package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTarget answers from fn, called with the 1-based number of the call.
type fakeTarget struct {
	calls  atomic.Uint64
	fn     func(n uint64) (Outcome, error)
	mu     sync.Mutex
	seen   map[string]int // entity -> operations
	badVer atomic.Uint64  // conditional updates with an expected version not read
}

const fakeVersion = 42

func (f *fakeTarget) Name() string                          { return "fake" }
func (f *fakeTarget) Setup(context.Context, Workload) error { return nil }
func (f *fakeTarget) Close() error                          { return nil }

func (f *fakeTarget) note(entity string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]int{}
	}
	f.seen[entity]++
}

func (f *fakeTarget) answer() (Outcome, error) {
	n := f.calls.Add(1)
	if f.fn == nil {
		return OK, nil
	}
	return f.fn(n)
}

func (f *fakeTarget) ReadVersion(context.Context, string) (uint64, error) { return fakeVersion, nil }

func (f *fakeTarget) ConditionalUpdate(_ context.Context, e string, expected uint64, _ []byte) (Outcome, error) {
	if expected != fakeVersion {
		f.badVer.Add(1)
	}
	f.note(e)
	return f.answer()
}

func (f *fakeTarget) Command(_ context.Context, e string, _ []byte) (Outcome, error) {
	f.note(e)
	return f.answer()
}

func testWorkload(t *testing.T, name string, entities int) Workload {
	t.Helper()
	w, err := NewWorkload(name, entities)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRun_ClosedLoopCountsOutcomesAndErrorKinds(t *testing.T) {
	for _, name := range []string{"w1-occ", "w1-command"} {
		t.Run(name, func(t *testing.T) {
			ft := &fakeTarget{fn: func(n uint64) (Outcome, error) {
				switch {
				case n%5 == 0:
					return Conflict, nil
				case n%7 == 0:
					return Rejected, nil
				case n%11 == 0:
					return 0, &OpError{Kind: KindUnavailable, Err: errors.New("no leader")}
				case n%13 == 0:
					return 0, fmt.Errorf("wrapped: %w", context.DeadlineExceeded)
				case n%17 == 0:
					return 0, &OpError{Kind: KindUnknownOutcome, Err: errors.New("outcome unknown: lost leadership")}
				}
				time.Sleep(100 * time.Microsecond)
				return OK, nil
			}}
			var observed atomic.Uint64
			res, err := Run(context.Background(), ft, Config{
				Workload: testWorkload(t, name, 100), Concurrency: 4,
				Warmup: 20 * time.Millisecond, Duration: 300 * time.Millisecond,
				observe: func(sample) { observed.Add(1) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Ops == 0 || res.OK == 0 || res.Conflicts == 0 || res.Rejected == 0 {
				t.Fatalf("outcomes: %+v", res)
			}
			for _, k := range ErrorKinds[:3] {
				if res.Errors[k.String()] == 0 || res.ErrorSamples[k.String()] == "" {
					t.Errorf("no %s error counted: %v %v", k, res.Errors, res.ErrorSamples)
				}
			}
			if len(res.Errors) != len(ErrorKinds) {
				t.Errorf("errors map %v lacks kinds", res.Errors)
			}
			if res.Ops+res.ErrorsTotal() > observed.Load() || res.Hist.Count() != res.Ops {
				t.Errorf("ops %d + errors %d vs %d observed, histogram %d", res.Ops, res.ErrorsTotal(), observed.Load(), res.Hist.Count())
			}
			if res.Mode != "closed" || res.Throughput <= 0 || res.Duration != 0.3 || len(res.PerSecond) != 1 || res.Dropped != 0 {
				t.Errorf("result: %+v", res)
			}
			if ft.badVer.Load() != 0 {
				t.Errorf("%d conditional updates did not use the version read", ft.badVer.Load())
			}
		})
	}
}

// TestRun_OpenLoopMeasuresFromIntendedTime is the coordinated-omission
// check. One worker serves an open loop of one operation per millisecond;
// every 10th operation takes 50ms. The operation queued behind a slow one
// is due at most 1ms after it, so it cannot finish earlier than 49ms after
// it was due, although the target spends no time on it: its recorded
// latency must include that queueing. A closed loop, or an open loop timing
// from the actual send, would record it as instant.
func TestRun_OpenLoopMeasuresFromIntendedTime(t *testing.T) {
	const slow = 50 * time.Millisecond
	var mu sync.Mutex
	service := map[uint64]time.Duration{} // call number -> time the target spent
	ft := &fakeTarget{}
	ft.fn = func(n uint64) (Outcome, error) {
		start := time.Now()
		if n%10 == 0 {
			time.Sleep(slow)
		}
		mu.Lock()
		service[n] = time.Since(start)
		mu.Unlock()
		return OK, nil
	}
	var samples []sample
	res, err := Run(context.Background(), ft, Config{
		Workload: testWorkload(t, "w1-command", 10), Concurrency: 1, Rate: 1000,
		Duration: 100 * time.Millisecond,
		observe:  func(s sample) { mu.Lock(); samples = append(samples, s); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 100 || res.Dropped != 0 || len(samples) != 100 {
		t.Fatalf("ops %d dropped %d samples %d, want 100 0 100", res.Ops, res.Dropped, len(samples))
	}
	// One worker takes jobs in order, so sequence number n is call n.
	checked := 0
	for _, s := range samples {
		if s.seq%10 != 1 || s.seq == 1 {
			continue
		}
		checked++
		if s.latency < slow-time.Millisecond {
			t.Errorf("op %d behind a slow op: latency %v, want >= %v (target spent %v)", s.seq, s.latency, slow-time.Millisecond, service[s.seq])
		}
		if service[s.seq] > s.latency/2 {
			t.Errorf("op %d: target spent %v of %v; the test needs queueing to dominate", s.seq, service[s.seq], s.latency)
		}
	}
	if checked != 9 {
		t.Fatalf("checked %d ops behind slow ones, want 9", checked)
	}
	// The queue only grows (10 ops take >= 50ms, 10 arrive per 10ms):
	// the tail shows it.
	if res.Latency.P99 < ms(slow) {
		t.Errorf("p99 %vms hides the queueing", res.Latency.P99)
	}
}

func TestRun_OpenLoopDropsOverTheBound(t *testing.T) {
	release := make(chan struct{})
	ft := &fakeTarget{fn: func(uint64) (Outcome, error) { <-release; return OK, nil }}
	// The ops hang past the 100 ms run, so the bound has to drop: a
	// duration, not a wait for a state.
	go func() { time.Sleep(400 * time.Millisecond); close(release) }()
	res, err := Run(context.Background(), ft, Config{
		Workload: testWorkload(t, "w1-command", 10), Concurrency: 2, Rate: 1000, MaxOutstanding: 5,
		Duration: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every send due in the window either ran or was dropped.
	if res.Ops+res.Dropped != 100 || res.Dropped == 0 || res.Ops > 5 {
		t.Fatalf("ops %d + dropped %d, want 100 with at most 5 ops", res.Ops, res.Dropped)
	}
	if res.Mode != "open" || res.MaxOutstanding != 5 {
		t.Fatalf("result: %+v", res)
	}
}

func TestRun_CancelStopsEarlyAndIgnoresCanceledOps(t *testing.T) {
	ft := &fakeTarget{fn: func(uint64) (Outcome, error) { time.Sleep(time.Millisecond); return OK, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	res, err := Run(ctx, ft, Config{Workload: testWorkload(t, "w1-command", 10), Concurrency: 2, Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Duration >= 3600 || res.ErrorsTotal() != 0 {
		t.Fatalf("result: interrupted %v duration %v errors %v", res.Interrupted, res.Duration, res.Errors)
	}
}

func TestRun_ProgressLines(t *testing.T) {
	var buf syncBuffer
	_, err := Run(context.Background(), &fakeTarget{}, Config{
		Workload: testWorkload(t, "w1-command", 10), Concurrency: 1,
		Warmup: 60 * time.Millisecond, Duration: 120 * time.Millisecond,
		Progress: &buf, ProgressInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "w1-command fake closed c=1") || !strings.Contains(out, "ops/s") || !strings.Contains(out, "p99") {
		t.Fatalf("progress output:\n%s", out)
	}
}

func TestConfig_Validation(t *testing.T) {
	w := testWorkload(t, "w1-occ", 10)
	for _, cfg := range []Config{
		{Workload: w, Concurrency: 0, Duration: time.Second},
		{Workload: w, Concurrency: 1},
		{Workload: w, Concurrency: 1, Duration: time.Second, Rate: -1},
		{Workload: w, Concurrency: 1, Duration: time.Second, Warmup: -1},
		{Workload: Workload{Name: "x"}, Concurrency: 1, Duration: time.Second},
	} {
		if _, err := Run(context.Background(), &fakeTarget{}, cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

func TestKindOf(t *testing.T) {
	cases := map[error]ErrorKind{
		errors.New("boom"):                                                            KindOther,
		context.DeadlineExceeded:                                                      KindTimeout,
		fmt.Errorf("x: %w", context.DeadlineExceeded):                                 KindTimeout,
		&OpError{Kind: KindUnavailable, Err: errors.New("u")}:                         KindUnavailable,
		fmt.Errorf("x: %w", &OpError{Kind: KindUnknownOutcome, Err: errors.New("u")}): KindUnknownOutcome,
	}
	for err, want := range cases {
		if got := KindOf(err); got != want {
			t.Errorf("KindOf(%v) = %v, want %v", err, got, want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the progress goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
