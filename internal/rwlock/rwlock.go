// Package rwlock hands the actor package a *sync.RWMutex without it
// importing sync: the determinism check (engine) forbids sync there so that
// actor code cannot observe goroutine scheduling, while the registry only
// needs a lock around run-time additions, which decide nothing.
package rwlock

import "sync"

// New returns a new *sync.RWMutex.
func New() *sync.RWMutex { return new(sync.RWMutex) }
