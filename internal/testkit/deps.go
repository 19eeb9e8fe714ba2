package testkit

import (
	"os/exec"
	"strings"
	"testing"
)

// NotLinked fails t for every package in the dependency closure of pkg (a
// `go list` pattern, "." for the package under test) whose import path starts
// with one of banned, naming the command that shows who imports it.
func NotLinked(t testing.TB, pkg string, banned ...string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, b := range banned {
			if strings.HasPrefix(dep, b) {
				t.Errorf("%s links %s; find who imports it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' %s", pkg, dep, pkg)
			}
		}
	}
}
