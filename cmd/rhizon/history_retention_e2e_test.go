package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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

// historyRetentionEnv: tenant's history older than 2 s of logical time goes
// once a snapshot covers it; shards snapshot every 64 entries, checked every
// 300 ms; leaders sweep often, one history row per entry, so trimming a few
// thousand events is thousands of entries (killable in the middle).
func historyRetentionEnv(tenant string) []string {
	return []string{
		"RHIZON_RETENTION=tenant=" + tenant + ":history=2s",
		"RHIZON_RETENTION_SWEEP_INTERVAL=200ms",
		"RHIZON_RETENTION_SWEEP_ROWS=1",
		"RHIZON_SNAPSHOT_THRESHOLD=64",
		"RHIZON_SNAPSHOT_INTERVAL=300ms",
	}
}

// countHistory opens a stopped node's state store and counts tenant's
// history records of entities whose id starts with prefix.
func countHistory(t *testing.T, dir, tenant, prefix string, shards uint32) int {
	t.Helper()
	return countHistoryBefore(t, dir, tenant, prefix, shards, 1<<63)
}

// countHistoryBefore is countHistory of the records below log index before.
func countHistoryBefore(t *testing.T, dir, tenant, prefix string, shards uint32, before uint64) int {
	t.Helper()
	db, err := storage.Open(filepath.Join(dir, "state"), storage.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	for id := range shards {
		rows, err := db.Shard(id).ScanHistory(nil, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Address.Tenant == tenant && strings.HasPrefix(r.Address.EntityID, prefix) && r.Pos.Index < before {
				n++
			}
		}
	}
	return n
}

// bulkEvents submits n counter adds spread over 32 entities hist-0..31.
func bulkEvents(t *testing.T, ctx context.Context, cl *client.Client, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				resp, err := cl.Submit(ctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: fmt.Sprint("hist-", i%32)},
					Type: "cmd.counter.add", Payload: []byte(`{"amount":1}`), IdempotencyKey: fmt.Sprint("hist-", i), CommandId: fmt.Sprint("hist-", i)})
				if err != nil || resp.Result.Status != pb.Status_STATUS_ACCEPTED {
					t.Errorf("hist-%d: %v %v", i, resp, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// allTrimmed reports nil when every bulk entity's history is empty and says
// it was trimmed (trimmed_before set).
func allTrimmed(ctx context.Context, cl *client.Client) error {
	for i := range 32 {
		resp, err := cl.History(ctx, &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: fmt.Sprint("hist-", i)}})
		if err != nil {
			return err
		}
		if len(resp.Records) != 0 || resp.TrimmedBefore == nil {
			return fmt.Errorf("hist-%d: %d records left, trimmed_before %v", i, len(resp.Records), resp.TrimmedBefore)
		}
	}
	return nil
}

// A `rhizon dev` node with a 2 s history window: a few thousand events are
// written, the node is killed (SIGKILL) while its leaders delete them,
// restarts, and the sweep finishes: no old record is left on disk, history
// (gRPC, the CLI, HTTP) says it was trimmed, a new event after the trim is
// kept, and `rhizon replay` of the data dir and the live Gateway.Replay are
// identical.
func TestHistoryRetention_DevKill9DuringSweep(t *testing.T) {
	needBinary(t)
	t.Parallel()
	dir := t.TempDir()
	// The dev node's default Raft groups (one, carrying the 4 shards): the
	// cluster variant below runs one group per shard.
	env := append(historyRetentionEnv("dev"), "RHIZON_RAFT_GROUPS=0")
	p := startDev(t, dir, env...)
	cl, err := client.Dial(p.addr, client.WithToken(p.token))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const bulk = 3000
	bulkEvents(t, ctx, cl, bulk)
	if t.Failed() {
		return
	}
	testkit.Poll{Timeout: 60 * time.Second, Every: 20 * time.Millisecond}.Eventually(t, "a history sweep deletes records", func() (bool, string) {
		n := metricSum(t, p.http, "rhizon_retention_history_swept_total", ".")
		return n > 0, fmt.Sprint(n, " swept")
	})
	cl.Close()
	p.kill()
	left := countHistory(t, dir, "dev", "hist-", 4)
	t.Logf("killed with %d of %d old history records left", left, bulk)
	if left == 0 {
		t.Fatalf("the sweep finished before the kill: the test no longer kills it in the middle (make it slower)")
	}

	p = startDev(t, dir, env...)
	cl, err = client.Dial(p.addr, client.WithToken(p.token))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testkit.Poll{Timeout: 120 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "the sweep resumes and trims every bulk entity", func() error {
		return allTrimmed(ctx, cl)
	})
	// A new event is kept and listed after the trim mark.
	resp, err := cl.Submit(ctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: "hist-0"},
		Type: "cmd.counter.add", Payload: []byte(`{"amount":1}`)})
	if err != nil || resp.Result.Status != pb.Status_STATUS_ACCEPTED {
		t.Fatalf("add after the trim: %v %v", resp, err)
	}
	h, err := cl.History(ctx, &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "hist-0"}})
	if err != nil || len(h.Records) != 1 || h.TrimmedBefore == nil || h.Records[0].GetEvent().GetIndex() < h.TrimmedBefore.Index {
		t.Fatalf("history after a new event: %v %v", h, err)
	}
	if out, code := p.rhizon(t, "history", "counter/hist-0"); code != 0 || !strings.Contains(out, "trimmed: records before") {
		t.Fatalf("rhizon history does not say it was trimmed: exit %d\n%s", code, out)
	}
	if out, code := p.rhizon(t, "history", "counter/hist-1", "-o", "json"); code != 0 || !strings.Contains(out, `"trimmed_before"`) {
		t.Fatalf("rhizon history -o json: exit %d\n%s", code, out)
	}
	if body := postJSON(t, http.DefaultClient, p.http, "/v1/history", p.token, `{"address":{"actor_type":"counter","entity_id":"hist-2"}}`); !strings.Contains(body, `"trimmed_before"`) {
		t.Fatalf("POST /v1/history: %s", body)
	}
	// Live replay (Gateway.Replay) of a trimmed entity's shard.
	if out, code := p.rhizon(t, "replay", "--entity", "counter/hist-0"); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("live replay: exit %d\n%s", code, out)
	}
	p.kill()
	// Only the bulk's records are counted: the new event ages past the 2 s
	// window too, and on a slow machine a sweep may already have taken it
	// (CI saw it).
	if n := countHistoryBefore(t, dir, "dev", "hist-", 4, h.Records[0].GetEvent().GetIndex()); n != 0 {
		t.Fatalf("%d history records of the bulk left on disk, want none", n)
	}
	out, code := p.rhizon(t, "replay", "--data-dir", dir)
	if code != 0 || strings.Contains(out, "DIVERGED") || strings.Count(out, "identical") != 1 { // one log: the group's
		t.Fatalf("replay after the history sweeps: exit %d\n%s", code, out)
	}
}

// Three nodes with tenant t's history window of 2 s: the node leading most
// shards is killed (SIGKILL) while the leaders trim thousands of events;
// the others finish, the killed node comes back, every shard's replicas
// end at equal applied indexes and state hashes, no old record is left on
// any replica, history says it was trimmed, and replay is identical.
func TestHistoryRetention_ClusterKill9DuringSweep(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.env = historyRetentionEnv("t")
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	cl := c.client(c.nodes[0])
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const bulk = 2000
	bulkEvents(t, ctx, cl, bulk)
	if t.Failed() {
		return
	}
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
	testkit.Poll{Timeout: 60 * time.Second, Every: 20 * time.Millisecond}.Eventually(t, "the victim's shards trim history", func() (bool, string) {
		n := metricSum(t, "http://"+victim.http, "rhizon_retention_history_swept_total", ".")
		return n > 0, fmt.Sprint(n)
	})
	victim.kill()
	left := countHistory(t, victim.dir, "t", "hist-", 8)
	t.Logf("killed %s with %d of %d old history records left on it", victim.id, left, bulk)
	if left == 0 {
		t.Fatalf("the sweep finished before the kill: the test no longer kills it in the middle")
	}
	var witness *nodeProc
	for _, p := range c.nodes {
		if p != victim {
			witness = p
		}
	}
	wcl := c.client(witness)
	defer wcl.Close()
	victim.start(t)
	testkit.Poll{Timeout: 120 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "history trimmed and replicas converged", func() error {
		if err := allTrimmed(ctx, wcl); err != nil {
			return err
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
		if n := countHistory(t, p.dir, "t", "hist-", 8); n != 0 {
			t.Fatalf("%s: %d old history records left", p.id, n)
		}
	}
	out, code := runRhizon(t, "replay", "--data-dir", victim.dir)
	if code != 0 || strings.Contains(out, "DIVERGED") || strings.Count(out, "identical") != 8 {
		t.Fatalf("replay of %s: exit %d\n%s", victim.id, code, out)
	}
}
