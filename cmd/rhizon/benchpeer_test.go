package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rhizon/rhizon/bench"
)

// TestBench_PeersInChildProcessesAndRatioTable runs `rhizon bench` against
// a real `rhizon dev` and two peers that it starts itself (rhizon
// bench-peer child processes, 3 real servers each), then checks the JSON
// runs, the comparison table, and that every peer process and data
// directory is gone once the command returns.
func TestBench_PeersInChildProcessesAndRatioTable(t *testing.T) {
	t.Parallel()
	needBinary(t)
	clusterSlot(t) // three etcd and three NATS servers
	if testing.Short() {
		t.Skip("starts rhizon dev and two 3-server peer clusters")
	}
	dev := startDev(t, t.TempDir())
	// The children's temporary directories go here, to be checked after.
	tmp := t.TempDir()
	out := filepath.Join(t.TempDir(), "runs.json")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "bench", "--target", "rhizon,etcd,jetstream-kv-sync",
		"--addr", dev.addr, "--token", dev.token, "--workload", "w1-occ", "--concurrency", "4",
		"--warmup", "0s", "--duration", "1s", "--entities", "20", "--progress=false", "--json", out)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rhizon bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("stdout:\n%s", stdout.String())

	// One JSON object per run, labelled with its target, each with answers.
	fh, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	results, err := bench.ReadJSON(fh)
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, r := range results {
		targets = append(targets, r.Target)
		if r.Ops == 0 || r.OK == 0 || r.ErrorsTotal() > 0 {
			t.Errorf("%s: %d ops, %d ok, errors %v %v", r.Target, r.Ops, r.OK, r.Errors, r.ErrorSamples)
		}
	}
	if strings.Join(targets, ",") != "rhizon,etcd,jetstream-kv-sync" {
		t.Errorf("runs of %v", targets)
	}

	// The comparison: a ratio on each peer's row.
	for _, peer := range []string{"etcd", "jetstream-kv-sync"} {
		re := regexp.MustCompile(`(?m)^\s*w1-occ\s+closed\s+-\s+4\s+` + peer + `\s+\d+\s+\S+\s+\S+\s+0\s+[0-9.]+x\s+\S+ \| \S+\s*$`)
		if !re.MatchString(stdout.String()) {
			t.Errorf("no comparison row for %s in\n%s", peer, stdout.String())
		}
	}

	// The peers are stopped and their directories removed.
	for _, m := range regexp.MustCompile(`pid (\d+)`).FindAllStringSubmatch(stderr.String(), -1) {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("peer process %d still running", pid)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}

	// --compare prints the same comparison from the file.
	cmp, err := exec.CommandContext(ctx, binary, "bench", "--compare", out).Output()
	if err != nil {
		t.Fatalf("--compare: %v", err)
	}
	if !strings.Contains(string(cmp), "RHIZON/TARGET") || !strings.Contains(string(cmp), "jetstream-kv-sync") {
		t.Errorf("--compare output:\n%s", cmp)
	}
}

func TestBench_PeerFlagsRefused(t *testing.T) {
	t.Parallel()
	needBinary(t)
	for _, args := range [][]string{
		{"bench", "--target", "redis"},
		{"bench", "--target", "etcd,jetstream-kv", "--peer-addrs", "http://127.0.0.1:1"},
		{"bench", "--target", "rhizon", "--peer-addrs", "http://127.0.0.1:1"},
	} {
		err := exec.Command(binary, args...).Run()
		var ee *exec.ExitError
		if err == nil || !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
			t.Errorf("rhizon %v: %v, want exit %d", args, err, exitUsage)
		}
	}
}

// TestBench_WasmCounterNeedsTheModule: wasm-counter on rhizon without
// --wasm-module is a usage error that says how to get the module, before
// any connection.
func TestBench_WasmCounterNeedsTheModule(t *testing.T) {
	t.Parallel()
	needBinary(t)
	out, err := exec.Command(binary, "bench", "--addr", "127.0.0.1:1", "--workload", "w1-command,wasm-counter").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(string(out), "--wasm-module") ||
		!strings.Contains(string(out), "make wasm-examples") {
		t.Fatalf("rhizon bench --workload wasm-counter without --wasm-module: %v\n%s", err, out)
	}
}
