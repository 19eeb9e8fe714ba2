//go:build failpoints

package ingress

import (
	"os"
	"strings"
	"syscall"
)

// failpoint kills the process at the named point when RHIZON_FAILPOINTS
// lists it: tests use it to crash between a commit and its ack. Only built
// with -tags failpoints.
func failpoint(name string) {
	for _, f := range strings.Split(os.Getenv("RHIZON_FAILPOINTS"), ",") {
		if f == name {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}
