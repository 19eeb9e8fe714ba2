package testkit

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records instead of stopping, so
// that the helpers' failures can be checked.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestEventuallyPassesOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	r := &recorder{TB: t}
	Eventually(r, 5*time.Second, "third call", func() (bool, string) {
		return n.Add(1) >= 3, fmt.Sprint("call ", n.Load())
	})
	if r.failed != "" {
		t.Fatalf("failed: %s", r.failed)
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("cond called %d times, want 3 (it must stop at the first true)", got)
	}
}

func TestEventuallyTimeoutReportsTheLastObservation(t *testing.T) {
	var n atomic.Int32
	r := &recorder{TB: t}
	start := time.Now()
	Eventually(r, 100*time.Millisecond, "never", func() (bool, string) {
		return false, fmt.Sprint("seen ", n.Add(1))
	})
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("gave up after %v, before the timeout", el)
	}
	want := fmt.Sprintf("never: not within 100ms; last: seen %d", n.Load())
	if r.failed != want {
		t.Fatalf("failure %q, want %q", r.failed, want)
	}
}

func TestPollEveryIsTheInterval(t *testing.T) {
	var n atomic.Int32
	r := &recorder{TB: t}
	Poll{Timeout: 250 * time.Millisecond, Every: 100 * time.Millisecond}.EventuallyNil(r, "never", func() error {
		n.Add(1)
		return errors.New("no")
	})
	// At 0, 100, 200 and 300 ms (fewer on a loaded machine): not the dozens
	// the default backoff makes.
	if got := n.Load(); got < 2 || got > 4 {
		t.Fatalf("%d checks in 250 ms every 100 ms", got)
	}
	if !strings.HasSuffix(r.failed, "last: no") {
		t.Fatalf("failure %q does not end with the last error", r.failed)
	}
}

func TestEventuallyNilPassesOnNil(t *testing.T) {
	var n atomic.Int32
	r := &recorder{TB: t}
	EventuallyNil(r, 5*time.Second, "second", func() error {
		if n.Add(1) < 2 {
			return errors.New("first")
		}
		return nil
	})
	if r.failed != "" || n.Load() != 2 {
		t.Fatalf("failed %q after %d calls", r.failed, n.Load())
	}
}

func TestConsistentlyHoldsForTheWindow(t *testing.T) {
	r := &recorder{TB: t}
	start := time.Now()
	Consistently(r, 60*time.Millisecond, "true", func() (bool, string) { return true, "" })
	if r.failed != "" {
		t.Fatal(r.failed)
	}
	if el := time.Since(start); el < 60*time.Millisecond {
		t.Fatalf("returned after %v, before the window ended", el)
	}
}

// A state that comes and goes within the window is caught: a single look
// after a sleep would miss it.
func TestConsistentlyCatchesATransientViolation(t *testing.T) {
	var n atomic.Int32
	r := &recorder{TB: t}
	Consistently(r, time.Second, "no blip", func() (bool, string) {
		k := n.Add(1)
		return k != 4, fmt.Sprint("blip at check ", k)
	})
	if r.failed != "no blip: stopped holding within 1s: blip at check 4" {
		t.Fatalf("failure %q", r.failed)
	}
	if n.Load() != 4 {
		t.Fatalf("went on checking after the violation (%d checks)", n.Load())
	}
}

func TestSettlesWaitsForNoChange(t *testing.T) {
	var n atomic.Int32
	r := &recorder{TB: t}
	start := time.Now()
	var settledAt time.Time
	Settles(r, 5*time.Second, 50*time.Millisecond, "settled", func() (string, bool) {
		// Changes for the first 10 looks, then stays.
		k := n.Add(1)
		if k <= 10 {
			return fmt.Sprint(k), true
		}
		if settledAt.IsZero() {
			settledAt = time.Now()
		}
		return "final", true
	})
	if r.failed != "" {
		t.Fatal(r.failed)
	}
	if settledAt.IsZero() || time.Since(settledAt) < 50*time.Millisecond {
		t.Fatalf("returned %v after start, before the state held for 50ms", time.Since(start))
	}
}

func TestSettlesNeverOKTimesOut(t *testing.T) {
	r := &recorder{TB: t}
	Settles(r, 80*time.Millisecond, 10*time.Millisecond, "leaders", func() (string, bool) { return "[n1 ]", false })
	if !strings.Contains(r.failed, "leaders: not within 80ms; last: not ok: [n1 ]") {
		t.Fatalf("failure %q", r.failed)
	}
}

func TestFreePortIsBindableAndNotRepeated(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t)
		if p < portLow || p >= portHigh {
			t.Fatalf("port %d outside [%d, %d)", p, portLow, portHigh)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if !bindable(p) {
			t.Fatalf("port %d is not free for TCP and UDP", p)
		}
	}
}

func TestFreeAddrIsLoopback(t *testing.T) {
	a := FreeAddr(t)
	host, port, err := net.SplitHostPort(a)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("FreeAddr %q: host %q, err %v", a, host, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < portLow {
		t.Fatalf("FreeAddr %q: port %q", a, port)
	}
}
