package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rhizon/rhizon/bench"
	"github.com/rhizon/rhizon/bench/peer"
	"github.com/rhizon/rhizon/internal/testkit"
)

// alive tells whether process pid runs. A zombie does not: an orphan
// whose new parent (init, in a container maybe not a reaping one) has not
// collected it yet has stopped all the same.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// waitGone waits until none of pids runs and none of dirs exists.
func waitGone(t *testing.T, within time.Duration, pids []int, dirs []string) {
	t.Helper()
	testkit.Poll{Timeout: within, Every: 100 * time.Millisecond}.Eventually(t, "peers gone after the parent stopped", func() (bool, string) {
		var left []string
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, "pid "+strconv.Itoa(pid))
			}
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); err == nil {
				left = append(left, d)
			}
		}
		return len(left) == 0, fmt.Sprint("still there: ", left)
	})
}

// TestPeer_OneProcessPerServerServesAndStopsWithTheContext starts each
// kind of peer as rhizon bench would, checks that its three servers are
// three processes (none of them this one) that serve a short w1-occ, and
// that ending the context stops them all and removes their directories.
func TestPeer_OneProcessPerServerServesAndStopsWithTheContext(t *testing.T) {
	needBinary(t)
	clusterSlot(t)
	for _, target := range []string{"etcd", bench.JetStreamKVSyncNoDirect} {
		t.Run(target, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			peersCtx, stopPeers := context.WithCancel(ctx)
			defer stopPeers()
			ps, err := bench.StartPeers(peersCtx, binary, target, false)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = ps.Stop() }()
			pids := ps.PIDs()
			distinct := slices.Compact(slices.Sorted(slices.Values(pids)))
			if len(pids) != peer.Replicas || len(distinct) != peer.Replicas || slices.Contains(pids, os.Getpid()) {
				t.Fatalf("peer processes %v (this test is %d), want %d distinct children", pids, os.Getpid(), peer.Replicas)
			}
			if len(ps.URLs) != peer.Replicas || len(ps.Dirs) != peer.Replicas {
				t.Fatalf("%d URLs and %d directories, want %d each", len(ps.URLs), len(ps.Dirs), peer.Replicas)
			}
			for _, pid := range pids {
				if !alive(pid) {
					t.Fatalf("peer process %d is not running", pid)
				}
			}

			tg, err := bench.NewPeerTarget(target, bench.PeerConfig{URLs: ps.URLs})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			w, err := bench.NewWorkload("w1-occ", 20)
			if err != nil {
				t.Fatal(err)
			}
			if err := tg.Setup(ctx, w); err != nil {
				t.Fatalf("setup: %v", err)
			}
			res, err := bench.Run(ctx, tg, bench.Config{Workload: w, Concurrency: 3, Duration: time.Second, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s on pids %v: %d ops, %d ok, %.0f ops/s", target, pids, res.Ops, res.OK, res.Throughput)
			if res.OK == 0 || res.ErrorsTotal() > 0 {
				t.Errorf("%d ok, errors %v", res.OK, res.ErrorSamples)
			}

			began := time.Now()
			stopPeers()
			waitGone(t, 45*time.Second, pids, ps.Dirs)
			t.Logf("%s: stopped with its context in %v", target, time.Since(began).Round(time.Millisecond))
		})
	}
}

// TestPeer_ProcessesDieWithAKilledLoadGenerator kills `rhizon bench` with
// SIGKILL while it runs against etcd (it has no chance to stop anything):
// the three peer processes notice their stdin close, stop, and remove
// their temporary directories themselves.
func TestPeer_ProcessesDieWithAKilledLoadGenerator(t *testing.T) {
	needBinary(t)
	clusterSlot(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "bench", "--target", "etcd", "--workload", "w1-command",
		"--concurrency", "2", "--warmup", "0s", "--duration", "60s", "--progress=false")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// "etcd ready in 2.1s: URLs (pid 1, pid 2, pid 3)"
	ready := regexp.MustCompile(`^etcd ready in .*\((pid \d+(, )?)+\)$`)
	var pids []int
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if line := sc.Text(); ready.MatchString(line) {
			for _, m := range regexp.MustCompile(`pid (\d+)`).FindAllStringSubmatch(line, -1) {
				pid, _ := strconv.Atoi(m[1])
				pids = append(pids, pid)
			}
			break
		}
	}
	if len(pids) != peer.Replicas {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("no line naming %d peer pids on rhizon bench's stderr (got %v)", peer.Replicas, pids)
	}
	go func() { _, _ = bufio.NewReader(stderr).WriteTo(devNull{}) }()
	time.Sleep(time.Second) // the workload runs a while before the kill: not a wait for a state
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// The orphans are reparented to init (or a subreaper), which reaps them.
	dirs, _ := os.ReadDir(tmp)
	var paths []string
	for _, d := range dirs {
		paths = append(paths, tmp+"/"+d.Name())
	}
	waitGone(t, 45*time.Second, pids, paths)
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
}

// devNull swallows what the killed process still had in its pipe.
type devNull struct{}

func (devNull) Write(p []byte) (int, error) { return len(p), nil }
