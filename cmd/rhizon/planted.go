//go:build !rhizon_planted

package main

import "github.com/rhizon/rhizon/actor"

// addPlanted adds nothing: the planted nondeterministic actor is only in
// test builds (build tag rhizon_planted, see planted_on.go).
func addPlanted(*actor.Registry) error { return nil }
