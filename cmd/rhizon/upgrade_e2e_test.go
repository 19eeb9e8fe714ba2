package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor/upgradetest"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit"
)

const (
	oldBinary = upgradetest.EnvVar + "=upgrade@1"
	newBinary = upgradetest.EnvVar + "=upgrade@1,2"
)

// upgradeLoad is a set of writers sending upgrade.add commands with unique
// keys, each retried (same key) until acknowledged; it notes, per key,
// whether the command was first sent after the switch-over returned.
type upgradeLoad struct {
	mu       sync.Mutex
	acked    map[string]string // key -> entity
	afterSw  map[string]bool   // key -> first sent after the switch-over
	switched atomic.Bool
	quit     chan struct{}
	wg       sync.WaitGroup
}

func (c *testCluster) startUpgradeLoad(workers int, nodes []*nodeProc) *upgradeLoad {
	l := &upgradeLoad{acked: map[string]string{}, afterSw: map[string]bool{}, quit: make(chan struct{})}
	var seq atomic.Int64
	for w := range workers {
		clients := make([]*client.Client, len(nodes))
		for i, p := range nodes {
			clients[i] = c.client(p)
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.quit:
					return
				default:
				}
				n := seq.Add(1)
				key, entity := fmt.Sprintf("u%d-%d", w, n), fmt.Sprintf("u%d", n%16)
				after := l.switched.Load()
				req := &pb.SubmitRequest{Address: &pb.Address{ActorType: upgradetest.Type, EntityId: entity}, Type: "cmd.upgrade.add",
					Payload: []byte(`{"amount":1}`), IdempotencyKey: key, CommandId: "cmd-" + key}
				for attempt := 0; attempt < 200; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := clients[(i+attempt)%len(clients)].Submit(ctx, req)
					cancel()
					if err == nil && resp.Result.Status == pb.Status_STATUS_ACCEPTED {
						l.mu.Lock()
						l.acked[key], l.afterSw[key] = entity, after
						l.mu.Unlock()
						break
					}
					select {
					case <-l.quit:
						return // unacknowledged: not counted
					case <-time.After(20 * time.Millisecond): // back off before the retry
					}
				}
			}
		}()
	}
	return l
}

func (l *upgradeLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *upgradeLoad) atLeast(n int) func() (bool, string) {
	return func() (bool, string) {
		got := l.count()
		return got >= n, fmt.Sprintf("%d of %d acknowledged", got, n)
	}
}

// waitServing waits until p reports every shard placed on 3 nodes with a
// leader and no replica halted (writers keep running, so indexes move).
func (c *testCluster) waitServing(p *nodeProc, total time.Duration) {
	c.t.Helper()
	testkit.Poll{Timeout: total, Every: 200 * time.Millisecond}.EventuallyNil(c.t, p.id+" serving", func() error {
		st, err := c.status(p)
		if err != nil {
			return err
		}
		for _, s := range st.Shards {
			if s.Halted {
				return fmt.Errorf("shard %d halted on %s: %s", s.Shard, s.NodeId, s.HaltError)
			}
		}
		return placed(st, 3, false)
	})
}

// activateCLI runs `rhizon actor activate --type upgrade --revision rev -o
// json` against p with the admin token, in this process: its stdout, the
// exit status main would give it, and the error (a gRPC status) it failed
// with.
func activateCLI(t *testing.T, p *nodeProc, rev string) (string, int, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := actorCmd()
	cmd.SetArgs([]string{"activate", "--type", upgradetest.Type, "--revision", rev, "-o", "json", "--addr", p.grpc, "--token", opsToken, "--timeout", "30s"})
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	code := 0
	if err != nil {
		code = exitError
		var ee *exitErr
		if errors.As(err, &ee) {
			code = ee.code
		}
	}
	return out.String(), code, err
}

// A rolling upgrade from revision 1 to 2 of an actor whose Decide changed,
// under load: each node restarted in turn with the "new binary" (revisions
// 1 and 2), the switch-over refused while a node lacks revision 2, then
// made. No replica halts or diverges, every acknowledged command is in
// every replica's history exactly once and decided alike everywhere, and
// every command sent after the switch-over is decided by revision 2.
func TestCluster_RollingUpgradeSwitchesRevisionWithoutDivergenceOrLoss(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.args = withoutFlag(p.args, "--raft-groups") // the default layout: 3 groups
		p.env = []string{oldBinary}
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	load := c.startUpgradeLoad(4, c.nodes)
	testkit.Eventually(t, 30*time.Second, "load warmed up", load.atLeast(100))

	for i, p := range c.nodes {
		if i == len(c.nodes)-1 {
			out, code, err := activateCLI(t, c.nodes[0], "2")
			if code != exitError || err == nil || !strings.Contains(err.Error(), "revision 2 of actor upgrade is missing on node(s) "+p.id+" (has 1)") {
				t.Fatalf("switch-over while %s runs the old binary: exit %d %v %s, want FailedPrecondition naming it", p.id, code, err, out)
			}
		}
		p.kill()
		p.env = []string{newBinary}
		p.start(t)
		c.waitServing(p, 60*time.Second)
		testkit.Eventually(t, 60*time.Second, "load flowing after restarting "+p.id, load.atLeast(load.count()+100))
	}

	out, code, err := activateCLI(t, c.nodes[1], "2")
	var resp struct{ Revision, Previous string }
	if code != 0 || json.Unmarshal([]byte(out), &resp) != nil || resp.Revision != "2" || resp.Previous != "" {
		t.Fatalf("switch-over: exit %d %v %s", code, err, out)
	}
	load.switched.Store(true)
	testkit.Eventually(t, 60*time.Second, "load flowing after the switch-over", load.atLeast(load.count()+200))
	close(load.quit)
	load.wg.Wait()

	c.waitConverged(c.nodes[0], 60*time.Second) // equal applied indexes and state hashes
	st, err := c.status(c.nodes[2])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Shards {
		if s.Halted {
			t.Fatalf("shard %d halted on %s: %s", s.Shard, s.NodeId, s.HaltError)
		}
	}
	if st.ActiveRevisions[upgradetest.Type] != "2" {
		t.Fatalf("active revisions %v, want upgrade=2", st.ActiveRevisions)
	}

	// Every acknowledged command once in every replica's history, decided
	// by the same revision on each, revision 2 for those sent after the
	// switch-over.
	entities := map[string]bool{}
	for _, e := range load.acked {
		entities[e] = true
	}
	decided := map[string]string{} // command id -> revision, on the first node
	byRev := map[string]int{}
	for ni, p := range c.nodes {
		cl := c.client(p)
		seen := map[string]int{}
		for e := range entities {
			tok := ""
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				h, err := cl.History(ctx, &pb.HistoryRequest{Address: &pb.Address{ActorType: upgradetest.Type, EntityId: e},
					PageSize: 1000, PageToken: tok, Consistency: pb.Consistency_CONSISTENCY_STALE})
				cancel()
				if err != nil {
					t.Fatalf("history of %s on %s: %v", e, p.id, err)
				}
				for _, r := range h.Records {
					ev := r.GetEvent()
					var a upgradetest.Added
					if err := json.Unmarshal(ev.GetPayload(), &a); err != nil {
						t.Fatalf("event %s on %s: %v", ev.GetId(), p.id, err)
					}
					id := ev.GetCommandId()
					seen[id]++
					if ni == 0 {
						decided[id] = a.By
						byRev[a.By]++
					} else if decided[id] != a.By {
						t.Fatalf("command %s decided by revision %s on %s, %s on %s", id, a.By, p.id, decided[id], c.nodes[0].id)
					}
				}
				if tok = h.NextPageToken; tok == "" {
					break
				}
			}
		}
		for k := range load.acked {
			if seen["cmd-"+k] != 1 {
				t.Fatalf("on %s, acknowledged command %s appears %d times", p.id, k, seen["cmd-"+k])
			}
			if load.afterSw[k] && decided["cmd-"+k] != "2" {
				t.Fatalf("command %s, sent after the switch-over, decided by revision %q", k, decided["cmd-"+k])
			}
		}
		for id, n := range seen {
			if n > 1 {
				t.Fatalf("on %s, command %s took effect %d times", p.id, id, n)
			}
		}
	}
	if byRev["1"] == 0 || byRev["2"] == 0 {
		t.Fatalf("events by revision %v: want both revisions", byRev)
	}
	t.Logf("%d commands acknowledged; events by revision %v", len(load.acked), byRev)

	// A node brought back with the old binary after the switch-over: its
	// replicas wait at the first entry of revision 2 (halted, with the
	// reason in status and health, leading nothing), and restarted with
	// the new binary they catch up to the same state.
	victim := c.nodes[2]
	victim.kill()
	victim.env = []string{oldBinary}
	victim.start(t)
	writer := c.client(c.nodes[0])
	for i := range 32 {
		key := fmt.Sprintf("rollback-%d", i)
		req := &pb.SubmitRequest{Address: &pb.Address{ActorType: upgradetest.Type, EntityId: fmt.Sprintf("u%d", i%16)}, Type: "cmd.upgrade.add",
			Payload: []byte(`{"amount":1}`), IdempotencyKey: key, CommandId: "cmd-" + key}
		testkit.Poll{Timeout: 30 * time.Second, Every: 50 * time.Millisecond}.EventuallyNil(t, "submit "+key, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := writer.Submit(ctx, req)
			return err
		})
	}
	testkit.Poll{Timeout: 60 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, victim.id+" waiting for revision 2", func() error {
		st, err := c.status(victim)
		if err != nil {
			return err
		}
		waiting := 0
		for _, s := range st.Shards {
			if s.NodeId != victim.id || !s.Halted {
				continue
			}
			// A halt is its log's: the group's, named by its id.
			if !strings.Contains(s.HaltError, fmt.Sprintf("shard %d needs revision 2 of actor upgrade", s.RaftGroup)) {
				return fmt.Errorf("shard %d halted for another reason: %s", s.Shard, s.HaltError)
			}
			if s.Role == "Leader" {
				return fmt.Errorf("waiting replica of shard %d still leads", s.Shard)
			}
			waiting++
		}
		if waiting == 0 {
			return errors.New("no waiting replica yet")
		}
		if !strings.Contains(strings.Join(st.HealthReasons, "; "), "needs revision 2 of actor upgrade") {
			return fmt.Errorf("health %s %v does not name the revision", st.Health, st.HealthReasons)
		}
		return nil
	})
	victim.kill()
	victim.env = []string{newBinary}
	victim.start(t)
	c.waitConverged(c.nodes[0], 60*time.Second)
	if st, err := c.status(victim); err != nil || st.Health != "READY" {
		t.Fatalf("after the restart with the new binary: %v %v", st.GetHealthReasons(), err)
	}
}
