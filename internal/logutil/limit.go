package logutil

import (
	"sync"
	"time"
)

// LimitEvery is the minimum spacing of lines a Limiter lets through, so a port
// scanner or a misconfigured peer cannot flood the log.
const LimitEvery = time.Second

// Limiter lets one log line through per LimitEvery and counts the rest. The
// zero value is ready to use.
type Limiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow reports whether a line may be logged now and, if so, how many were
// suppressed since the last one.
func (r *Limiter) Allow(now time.Time) (suppressed int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < LimitEvery {
		r.suppressed++
		return 0, false
	}
	r.last, suppressed, r.suppressed = now, r.suppressed, 0
	return suppressed, true
}
