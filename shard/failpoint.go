//go:build !failpoints

package shard

import "github.com/rhizon/rhizon/engine"

// applyFailpoint is a no-op outside test builds (build tag failpoints).
func applyFailpoint(*engine.Entry) error { return nil }
