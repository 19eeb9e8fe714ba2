package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/storage"
)

// retentionEnv: tenant dev's idempotency records expire after 2 s of
// logical time; leaders sweep often, one record per entry, so a cleanup of
// a few thousand records is thousands of entries (killable in the middle).
var retentionEnv = []string{
	"RHIZON_RETENTION=tenant=dev:idempotency=2s",
	"RHIZON_RETENTION_SWEEP_INTERVAL=200ms",
	"RHIZON_RETENTION_SWEEP_ROWS=1",
}

// countResults opens a stopped node's state store and counts tenant dev's
// idempotency records whose key starts with prefix.
func countResults(t *testing.T, dir, prefix string) int {
	return countResultsIn(t, dir, "dev", prefix, 4)
}

func countResults8(t *testing.T, dir, prefix string) int {
	return countResultsIn(t, dir, "t", prefix, 8)
}

func countResultsIn(t *testing.T, dir, tenant, prefix string, shards uint32) int {
	t.Helper()
	db, err := storage.Open(filepath.Join(dir, "state"), storage.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	for id := range shards {
		rows, err := db.Shard(id).ScanResults(nil, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Address.Tenant == tenant && strings.HasPrefix(r.Key, prefix) {
				n++
			}
		}
	}
	return n
}

// A `rhizon dev` node with a 2 s idempotency window: a resent key is a
// duplicate inside the window and a new command past it; the node is killed
// (SIGKILL) while its leaders sweep thousands of expired records, restarts,
// the sweep finishes (no expired record is left on disk), and `rhizon
// replay` re-executes every shard's log, sweeps included, to identical
// state hashes.
func TestRetention_DevKill9DuringSweep(t *testing.T) {
	needBinary(t)
	t.Parallel()
	dir := t.TempDir()
	// The dev node's default Raft groups (one, carrying the 4 shards): the
	// cluster variant below runs one group per shard.
	env := append(slices.Clone(retentionEnv), "RHIZON_RAFT_GROUPS=0")
	p := startDev(t, dir, env...)
	cl, err := client.Dial(p.addr, client.WithToken(p.token))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	submit := func(cl *client.Client, entity, key, id string) *pb.Result {
		t.Helper()
		resp, err := cl.Submit(ctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: entity},
			Type: "cmd.counter.add", Payload: []byte(`{"amount":1}`), IdempotencyKey: key, CommandId: id})
		if err != nil {
			t.Fatalf("submit %s: %v", key, err)
		}
		return resp.Result
	}
	if r := submit(cl, "ret-0", "k0", "first"); r.Status != pb.Status_STATUS_ACCEPTED || r.Version != 1 {
		t.Fatalf("first: %v", r)
	}
	if r := submit(cl, "ret-0", "k0", "second"); !r.Duplicate || r.Version != 1 {
		t.Fatalf("inside the window: want a duplicate, got %v", r)
	}

	const bulk = 3000
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < bulk; i += 16 {
				if r := submit(cl, fmt.Sprint("bulk-", i%32), fmt.Sprint("bulk-", i), ""); r.Status != pb.Status_STATUS_ACCEPTED {
					t.Errorf("bulk-%d: %v", i, r)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Past the window the same key is a new command (version 2).
	testkit.Poll{Timeout: 30 * time.Second, Every: 50 * time.Millisecond}.Eventually(t, "k0 expires", func() (bool, string) {
		r := submit(cl, "ret-0", "k0", fmt.Sprint("again-", time.Now().UnixNano()))
		return !r.Duplicate && r.Version >= 2, fmt.Sprint(r)
	})
	// Kill -9 as soon as the leaders have started deleting.
	testkit.Poll{Timeout: 30 * time.Second, Every: 20 * time.Millisecond}.Eventually(t, "a sweep deletes records", func() (bool, string) {
		n := metricSum(t, p.http, "rhizon_retention_results_swept_total", ".")
		return n > 0, fmt.Sprint(n, " swept")
	})
	cl.Close()
	p.kill()
	left := countResults(t, dir, "bulk-")
	t.Logf("killed with %d of %d expired records left", left, bulk)
	if left == 0 {
		t.Fatalf("the sweep finished before the kill: the test no longer kills it in the middle (make it slower)")
	}

	p = startDev(t, dir, env...)
	testkit.Poll{Timeout: 90 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "the sweep resumes and finishes", func() (bool, string) {
		n := metricSum(t, p.http, "rhizon_retention_results_swept_total", ".")
		return n >= float64(left), fmt.Sprintf("%v swept of %d", n, left)
	})
	p.kill()
	if n := countResults(t, dir, "bulk-"); n != 0 {
		t.Fatalf("%d expired records left after the sweep", n)
	}
	out, code := p.rhizon(t, "replay", "--data-dir", dir)
	if code != 0 || strings.Contains(out, "DIVERGED") || strings.Count(out, "identical") != 1 { // one log: the group's
		t.Fatalf("replay after the sweeps: exit %d\n%s", code, out)
	}
}

// Three nodes with tenant t's idempotency window of 2 s: the node leading
// most shards is killed (SIGKILL) while the leaders sweep thousands of
// expired records; the others take over the sweep, the killed node comes
// back, and every shard's replicas end at equal applied indexes and state
// hashes; replay of a node's logs is identical.
func TestRetention_ClusterKill9DuringSweep(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.env = []string{"RHIZON_RETENTION=tenant=t:idempotency=2s", "RHIZON_RETENTION_SWEEP_INTERVAL=200ms", "RHIZON_RETENTION_SWEEP_ROWS=1"}
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	cl := c.client(c.nodes[0])
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	submit := func(entity, key, id string) *pb.Result {
		t.Helper()
		req := submitReq(entity, key)
		req.CommandId = id
		resp, err := cl.Submit(ctx, req)
		if err != nil {
			t.Fatalf("submit %s: %v", key, err)
		}
		return resp.Result
	}
	if r := submit("ret-0", "k0", "first"); r.Status != pb.Status_STATUS_ACCEPTED {
		t.Fatalf("first: %v", r)
	}
	if r := submit("ret-0", "k0", "second"); !r.Duplicate {
		t.Fatalf("inside the window: want a duplicate, got %v", r)
	}
	const bulk = 2000
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < bulk; i += 16 {
				if r := submit(fmt.Sprint("bulk-", i%32), fmt.Sprint("bulk-", i), fmt.Sprint("bulk-", i)); r.Status != pb.Status_STATUS_ACCEPTED {
					t.Errorf("bulk-%d: %v", i, r)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	testkit.Poll{Timeout: 30 * time.Second, Every: 50 * time.Millisecond}.Eventually(t, "k0 expires", func() (bool, string) {
		r := submit("ret-0", "k0", fmt.Sprint("again-", time.Now().UnixNano()))
		return !r.Duplicate, fmt.Sprint(r)
	})

	st := c.mustStatus(c.nodes[0])
	leads := map[string]int{}
	for _, s := range st.Shards {
		if s.Role == "Leader" {
			leads[s.NodeId]++
		}
	}
	victim := c.nodes[0]
	for _, p := range c.nodes {
		if leads[p.id] > leads[victim.id] {
			victim = p
		}
	}
	// Every replica counts the records its sweeps delete, on every shard
	// it holds (all 8 here): a node that stays up counts them all.
	var witness *nodeProc
	testkit.Poll{Timeout: 30 * time.Second, Every: 20 * time.Millisecond}.Eventually(t, "the victim's shards sweep", func() (bool, string) {
		n := metricSum(t, "http://"+victim.http, "rhizon_retention_results_swept_total", ".")
		return n > 0, fmt.Sprint(n)
	})
	victim.kill()
	for _, p := range c.nodes {
		if p != victim {
			witness = p
		}
	}
	left := countResults8(t, victim.dir, "bulk-")
	t.Logf("killed %s with %d of %d expired records left on it", victim.id, left, bulk)
	if left == 0 {
		t.Fatalf("the sweep finished before the kill: the test no longer kills it in the middle")
	}
	victim.start(t)
	// Every expired record goes (on every replica: the victim catches up
	// through the log or a snapshot), and the replicas agree.
	testkit.Poll{Timeout: 90 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "replicas converge after the sweep", func() error {
		if n := metricSum(t, "http://"+witness.http, "rhizon_retention_results_swept_total", "."); n < bulk {
			return fmt.Errorf("%v of %d swept (as %s counts)", n, bulk, witness.id)
		}
		st, err := c.status(c.nodes[0])
		if err != nil {
			return err
		}
		return converged(st, 3)
	})
	for _, p := range c.nodes {
		p.kill()
	}
	for _, p := range c.nodes {
		if n := countResults8(t, p.dir, "bulk-"); n != 0 {
			t.Fatalf("%s: %d expired records left", p.id, n)
		}
	}
	out, code := runRhizon(t, "replay", "--data-dir", victim.dir)
	if code != 0 || strings.Contains(out, "DIVERGED") || strings.Count(out, "identical") != 8 {
		t.Fatalf("replay of %s: exit %d\n%s", victim.id, code, out)
	}
}

// runRhizon runs the CLI with args and returns stdout and the exit code.
func runRhizon(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb strings.Builder
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Logf("rhizon %v: exit %d, stderr: %s", args, ee.ExitCode(), errb.String())
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("rhizon %v: %v", args, err)
	}
	return out.String(), 0
}
