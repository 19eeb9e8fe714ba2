// Package testkit holds the helpers that Rhizon's tests share: polling for a
// condition instead of sleeping (Eventually, Consistently, Settles) and free
// loopback ports. It imports nothing of Rhizon, so that any package's tests,
// including the internal tests of cluster, shard and storage, can use it
// without an import cycle; harnesses that need a Rhizon package live in
// their own sub-package beside it.
package testkit

import (
	"fmt"
	"testing"
	"time"
)

// maxEvery caps the default polling interval: the interval starts at a
// millisecond, so cheap conditions that are met at once pass at once, and
// doubles up to this, so a slow condition does not spin a shared CPU.
const maxEvery = 50 * time.Millisecond

// Poll is how long to wait for a condition and how often to check it. A
// zero Every backs off from 1 ms to 50 ms; set it for a check that is
// expensive, such as one that runs a process.
type Poll struct {
	Timeout time.Duration
	Every   time.Duration
}

// Eventually polls cond until it reports true, and fails t if it has not
// within timeout. cond's second result describes what it saw; the failure
// message shows the last one, so that a timeout says how far things got.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	Poll{Timeout: timeout}.Eventually(t, what, cond)
}

// EventuallyNil is Eventually for a check written as an error: it polls f
// until f returns nil, and a timeout reports f's last error.
func EventuallyNil(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	Poll{Timeout: timeout}.EventuallyNil(t, what, f)
}

// Eventually is the package's Eventually with p's interval.
func (p Poll) Eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(p.Timeout)
	every := p.first()
	for {
		ok, last := cond()
		if ok {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, p.Timeout, last)
			return // reached only when t is a recorder in this package's tests
		}
		time.Sleep(every)
		every = p.next(every)
	}
}

// EventuallyNil is the package's EventuallyNil with p's interval.
func (p Poll) EventuallyNil(t testing.TB, what string, f func() error) {
	t.Helper()
	p.Eventually(t, what, errCond(f))
}

func errCond(f func() error) func() (bool, string) {
	return func() (bool, string) {
		if err := f(); err != nil {
			return false, err.Error()
		}
		return true, ""
	}
}

func (p Poll) first() time.Duration {
	if p.Every > 0 {
		return p.Every
	}
	return time.Millisecond
}

func (p Poll) next(every time.Duration) time.Duration {
	if p.Every > 0 {
		return p.Every
	}
	return min(2*every, maxEvery)
}

// Consistently checks cond throughout window and fails t the first time it
// does not hold. It is for absence: "nothing is applied twice" can only be
// observed for a while, so the window is what the test bounds. Checking all
// along, rather than once after a sleep, also catches a state that appears
// and goes away again. Wait first for a positive signal that the unwanted
// thing would have come before (the event after it, the queue drained), so
// the window starts where it counts.
func Consistently(t testing.TB, window time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	end := time.Now().Add(window)
	every := time.Millisecond
	for {
		ok, last := cond()
		if !ok {
			t.Fatalf("%s: stopped holding within %v: %s", what, window, last)
			return
		}
		if !time.Now().Before(end) {
			return
		}
		time.Sleep(every)
		every = min(2*every, maxEvery)
	}
}

// Settles waits until observe reports ok with the same state for hold
// without a change, and fails t if that has not happened within timeout.
// It is for a system that converges by moving (leaders spread after a
// start): a single observation could catch it mid-move.
func Settles(t testing.TB, timeout, hold time.Duration, what string, observe func() (state string, ok bool)) {
	t.Helper()
	var last string
	var since time.Time
	Eventually(t, timeout, what, func() (bool, string) {
		cur, ok := observe()
		switch {
		case !ok:
			since = time.Time{}
		case since.IsZero() || cur != last:
			since = time.Now()
		}
		last = cur
		if !ok {
			return false, "not ok: " + cur
		}
		stable := time.Since(since)
		return stable >= hold, fmt.Sprintf("%s (unchanged for %v)", cur, stable.Round(time.Millisecond))
	})
}
