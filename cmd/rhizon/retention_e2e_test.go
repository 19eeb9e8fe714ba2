package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
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
	t.Helper()
	db, err := storage.Open(filepath.Join(dir, "state"), storage.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	for id := range uint32(4) {
		rows, err := db.Shard(id).ScanResults(nil, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Address.Tenant == "dev" && strings.HasPrefix(r.Key, prefix) {
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
	p := startDev(t, dir, retentionEnv...)
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

	p = startDev(t, dir, retentionEnv...)
	testkit.Poll{Timeout: 90 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "the sweep resumes and finishes", func() (bool, string) {
		n := metricSum(t, p.http, "rhizon_retention_results_swept_total", ".")
		return n >= float64(left), fmt.Sprintf("%v swept of %d", n, left)
	})
	p.kill()
	if n := countResults(t, dir, "bulk-"); n != 0 {
		t.Fatalf("%d expired records left after the sweep", n)
	}
	out, code := p.rhizon(t, "replay", "--data-dir", dir)
	if code != 0 || strings.Contains(out, "DIVERGED") || strings.Count(out, "identical") != 4 {
		t.Fatalf("replay after the sweeps: exit %d\n%s", code, out)
	}
}
