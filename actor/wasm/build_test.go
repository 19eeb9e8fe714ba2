package wasm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Modules are built from Go sources with the standard toolchain, once per
// test process, into a temporary directory.
var (
	buildDir  string
	buildMu   sync.Mutex
	buildDone = map[string][]byte{}
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rhizon-wasm-test")
	if err != nil {
		panic(err)
	}
	buildDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildModule compiles the main package pkg (relative to this directory) to
// a c-shared wasip1 module and returns its bytes.
func buildModule(tb testing.TB, pkg string) []byte {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := buildDone[pkg]; ok {
		return b
	}
	out := filepath.Join(buildDir, strings.NewReplacer("/", "_", ".", "_").Replace(pkg)+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	buildDone[pkg] = b
	return b
}

func counterModule(tb testing.TB) []byte { return buildModule(tb, "../../examples/wasm/counter") }
