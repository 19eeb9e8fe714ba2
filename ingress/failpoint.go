//go:build !failpoints

package ingress

// failpoint is a no-op outside test builds (build tag failpoints).
func failpoint(string) {}
