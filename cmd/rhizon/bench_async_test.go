package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/bench"
	"github.com/rhizon/rhizon/client"
)

// TestBench_IngressAndSagaAgainstARealDevNode runs the ingress and saga
// workloads for real: `rhizon dev` is a child process with its embedded
// NATS, and `rhizon bench` runs in this process (so -race covers the load
// generator) with the node's NATS URL. Every run must complete operations
// without an error; etcd, asked for the same workloads, is reported as
// skipped (not applicable) without being started, and the command exits 0.
func TestBench_IngressAndSagaAgainstARealDevNode(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts rhizon dev")
	}
	dev := startDev(t, t.TempDir())
	if dev.nats == "" {
		t.Fatal("rhizon dev printed no NATS URL")
	}
	out := filepath.Join(t.TempDir(), "async.json")
	cmd := benchCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetArgs([]string{"--target", "rhizon,etcd", "--addr", dev.addr, "--token", dev.token, "--nats", dev.nats,
		"--workload", "ingress,saga", "--concurrency", "8", "--warmup", "500ms", "--duration", "2s",
		"--entities", "8", "--op-timeout", "20s", "--progress=false", "--json", out})
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("rhizon bench: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
	case <-time.After(4 * time.Minute):
		t.Fatalf("rhizon bench still running after 4 minutes\nstderr:\n%s", stderr.String())
	}
	t.Logf("stdout:\n%s", stdout.String())
	if strings.Contains(stderr.String(), "starting etcd") {
		t.Errorf("etcd was started although no workload applies to it:\n%s", stderr.String())
	}

	fh, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	results, err := bench.ReadJSON(fh)
	if err != nil {
		t.Fatal(err)
	}
	ran := map[string]bool{}
	for _, r := range results {
		switch r.Target {
		case "rhizon":
			ran[r.Workload] = true
			if r.Skipped != "" || r.Ops == 0 || r.OK != r.Ops || r.ErrorsTotal() != 0 {
				t.Errorf("%s on rhizon: skipped %q, %d ops, %d ok, %d rejected, errors %v %v",
					r.Workload, r.Skipped, r.Ops, r.OK, r.Rejected, r.Errors, r.ErrorSamples)
			}
		case "etcd":
			if !strings.HasPrefix(r.Skipped, "not applicable") || r.Ops != 0 {
				t.Errorf("%s on etcd: skipped %q, %d ops", r.Workload, r.Skipped, r.Ops)
			}
		default:
			t.Errorf("run on %s", r.Target)
		}
	}
	if !ran["ingress"] || !ran["saga"] || len(results) != 4 {
		t.Errorf("runs: %d, rhizon ran %v", len(results), ran)
	}
	for _, want := range []string{"ingress on etcd skipped: not applicable", "saga on etcd skipped: not applicable"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("no %q in the tables", want)
		}
	}

	// The effects are there: the counters add up to at least the ingress
	// operations of the window (warm-up and probe commands add more).
	cl, err := client.Dial(dev.addr, client.WithToken(dev.token))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var total int64
	for i := range 8 {
		resp, err := cl.Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "bench-" + strconv.Itoa(i)}})
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Value int64 `json:"value"`
		}
		if resp.Found {
			if err := json.Unmarshal(resp.State, &st); err != nil {
				t.Fatalf("counter state %s: %v", resp.State, err)
			}
		}
		total += st.Value
	}
	var ingressOps uint64
	for _, r := range results {
		if r.Target == "rhizon" && r.Workload == "ingress" {
			ingressOps = r.Ops
		}
	}
	if total < int64(ingressOps) {
		t.Errorf("counters add up to %d, fewer than the %d ingress operations of the window", total, ingressOps)
	}

	// Without the node credentials the workload cannot read the events
	// stream: its setup fails at once, saying what is missing.
	anon, err := url.Parse(dev.nats)
	if err != nil {
		t.Fatal(err)
	}
	anon.User = nil
	cmd = benchCmd()
	stdout.Reset()
	stderr.Reset()
	cmd.SetArgs([]string{"--addr", dev.addr, "--token", dev.token, "--nats", anon.String(),
		"--workload", "ingress", "--concurrency", "1", "--warmup", "0s", "--duration", "1s", "--progress=false"})
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "node credentials") {
		t.Fatalf("ingress workload without the node credentials: %v, want an error naming them", err)
	}
}

// TestBench_IngressWithoutNATSNamesTheFlag: without --nats the ingress
// setup fails with a message naming the flag.
func TestBench_IngressWithoutNATSNamesTheFlag(t *testing.T) {
	t.Parallel()
	cmd := benchCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetArgs([]string{"--addr", "127.0.0.1:1", "--token", "x", "--workload", "ingress", "--duration", "1s", "--progress=false"})
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	var ee *exitErr
	if !errors.As(err, &ee) || ee.code != exitError || !strings.Contains(err.Error(), "--nats") {
		t.Fatalf("ingress without --nats: %v", err)
	}
}
