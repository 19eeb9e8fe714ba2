package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit"
)

// otherTenantToken acts in tenant "u2" only (role tenant).
const otherTenantToken = "cluster-e2e-u2-token-0123456789ab"

// buildWasm builds the main package pkg (relative to cmd/rhizon) with the
// command the README documents, into dir.
func buildWasm(t *testing.T, dir, pkg, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o %s %s: %v\n%s", name, pkg, err, msg)
	}
	return out
}

// rhizonAs runs the CLI against node p with token and returns stdout,
// stderr and the exit code.
func rhizonAs(t *testing.T, p *nodeProc, token string, args ...string) (string, string, int) {
	t.Helper()
	return cli(t, append(args, "--addr", p.grpc, "--token", token)...)
}

// wasmLoad sends wcounter add commands with unique keys, each retried (same
// key) until acknowledged, noting per key whether it was first sent after
// the switch-over to revision 2.
type wasmLoad struct {
	mu       sync.Mutex
	acked    map[string]string // key -> entity
	afterSw  map[string]bool
	switched atomic.Bool
	quit     chan struct{}
	wg       sync.WaitGroup
}

func (c *testCluster) startWasmLoad(workers int) *wasmLoad {
	l := &wasmLoad{acked: map[string]string{}, afterSw: map[string]bool{}, quit: make(chan struct{})}
	var seq atomic.Int64
	for w := range workers {
		clients := make([]*client.Client, len(c.nodes))
		for i, p := range c.nodes {
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
				key, entity := fmt.Sprintf("w%d-%d", w, n), fmt.Sprintf("l%d", n%8)
				after := l.switched.Load()
				req := &pb.SubmitRequest{Address: &pb.Address{ActorType: "wcounter", EntityId: entity}, Type: "cmd.wcounter.add",
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

func (l *wasmLoad) atLeast(n int) func() (bool, string) {
	return func() (bool, string) {
		l.mu.Lock()
		got := len(l.acked)
		l.mu.Unlock()
		return got >= n, fmt.Sprintf("%d of %d acknowledged", got, n)
	}
}

// A new user's path on a running 3-node cluster, no node restarted: build
// the example counter with the documented command, deploy it, activate it,
// send through the gateway, read history and watch, replay identically.
// Tenant scoping: another tenant can neither see, use nor deploy over the
// type. Then revision 2 (Decide changed: adds count double) rolled out under
// load: every acknowledged command once on every replica, decided alike,
// those sent after the switch by revision 2; a restarted node loads the
// modules from the control state and catches up.
func TestCluster_DeployWasmActorAtRunTime(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	v1 := buildWasm(t, dir, "../../examples/wasm/counter", "counter.wasm")
	v2 := buildWasm(t, dir, "../../actor/wasm/testdata/counter2", "counter2.wasm")

	c := newTestCluster(t, 3, time.Minute)
	tokens := fmt.Sprintf(`{"tokens":[
		{"token":%q,"principal":{"id":"tester","type":"user"},"scopes":[{"tenant":"t","workspace":"*"}]},
		{"token":%q,"principal":{"id":"stranger","type":"user"},"scopes":[{"tenant":"u2","workspace":"*"}]},
		{"token":%q,"role":"admin","principal":{"id":"ops","type":"user"},"scopes":[{"tenant":"t","workspace":"*"}]}]}`,
		clusterToken, otherTenantToken, opsToken)
	if err := os.WriteFile(filepath.Join(c.root, "tokens.json"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	c.withNATS()
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 90*time.Second)
	c.waitJetStream(60 * time.Second)
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]

	// Deploy as tenant t: every node loads it before deploy answers.
	out, errOut, code := rhizonAs(t, n1, clusterToken, "actor", "deploy", v1, "--type", "wcounter", "--revision", "1", "-o", "json")
	var dep struct {
		Owner   string `json:"owner"`
		Created bool   `json:"created"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &dep) != nil || dep.Owner != "t" || !dep.Created {
		t.Fatalf("deploy: exit %d %s %s", code, out, errOut)
	}
	if out, _, code := rhizonAs(t, n0, clusterToken, "actor", "deploy", v1, "--type", "wcounter", "--revision", "1", "-o", "json"); code != 0 || !strings.Contains(out, `"created": false`) {
		t.Fatalf("deploying the same module again: exit %d %s", code, out)
	}
	if _, errOut, code := rhizonAs(t, n0, clusterToken, "actor", "deploy", v2, "--type", "wcounter", "--revision", "1"); code != exitError || !strings.Contains(errOut, "already deployed with another module") {
		t.Fatalf("another module as revision 1: exit %d %s", code, errOut)
	}
	if _, errOut, code := rhizonAs(t, n0, clusterToken, "actor", "deploy", v1, "--type", "counter", "--revision", "9"); code != exitError || !strings.Contains(errOut, "built-in") {
		t.Fatalf("deploy over a built-in type: exit %d %s", code, errOut)
	}
	var rows []actorRow
	testkit.Poll{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "every node lists wcounter 1", func() error {
		out, _, code := rhizonAs(t, n2, clusterToken, "actor", "list", "-o", "json")
		rows = nil
		if code != 0 || json.Unmarshal([]byte(out), &rows) != nil {
			return fmt.Errorf("actor list: exit %d %s", code, out)
		}
		for _, r := range rows {
			if r.Type == "wcounter" && len(r.Revisions["1"]) == 3 && r.Tenant == "t" && len(r.Missing) == 0 {
				return nil
			}
		}
		return fmt.Errorf("actor list: %s", out)
	})

	// Tenant u2 neither sees, uses nor deploys over tenant t's type.
	out, _, code = rhizonAs(t, n0, otherTenantToken, "actor", "list", "-o", "json")
	if code != 0 || strings.Contains(out, "wcounter") || !strings.Contains(out, `"counter"`) {
		t.Fatalf("u2's actor list: exit %d %s", code, out)
	}
	if _, errOut, code := rhizonAs(t, n0, otherTenantToken, "actor", "deploy", v2, "--type", "wcounter", "--revision", "7"); code != exitError || !strings.Contains(errOut, "belongs to another tenant") {
		t.Fatalf("u2 deploying over t's type: exit %d %s", code, errOut)
	}

	// Not active yet: NotFound naming the command to run.
	if _, errOut, code := rhizonAs(t, n0, clusterToken, "send", "wcounter/c1", "add", `{"amount":1}`); code == 0 || !strings.Contains(errOut, "deployed but not active") {
		t.Fatalf("send before activate: exit %d %s", code, errOut)
	}
	if _, errOut, code := rhizonAs(t, n0, otherTenantToken, "actor", "activate", "--type", "wcounter", "--revision", "1"); code != exitError || !strings.Contains(errOut, "PermissionDenied") && !strings.Contains(errOut, "role admin") {
		t.Fatalf("u2 activating t's type: exit %d %s", code, errOut)
	}
	if out, errOut, code := rhizonAs(t, n2, clusterToken, "actor", "activate", "--type", "wcounter", "--revision", "1"); code != 0 {
		t.Fatalf("activate: exit %d %s %s", code, out, errOut)
	}
	for i := 1; i <= 3; i++ {
		if out, errOut, code := rhizonAs(t, c.nodes[i%3], clusterToken, "send", "wcounter/c1", "add", fmt.Sprintf(`{"amount":%d}`, i)); code != 0 {
			t.Fatalf("send %d: exit %d %s %s", i, code, out, errOut)
		}
	}
	if _, errOut, code := rhizonAs(t, n0, otherTenantToken, "send", "wcounter/c1", "add", `{"amount":1}`); code == 0 || !strings.Contains(errOut, "NotFound") && !strings.Contains(errOut, "unknown actor type") {
		t.Fatalf("u2 sending to t's type: exit %d %s", code, errOut)
	}
	out, _, code = rhizonAs(t, n1, clusterToken, "history", "wcounter/c1", "-o", "json")
	if code != 0 || strings.Count(out, `"added"`) != 3 && strings.Count(out, "wcounter.added") != 3 {
		t.Fatalf("history: exit %d %s", code, out)
	}
	out, errOut, code = rhizonAs(t, n2, clusterToken, "watch", "--entity", "wcounter/c1", "--from-beginning", "--count", "3", "-o", "json", "--timeout", "60s")
	if code != 0 || len(strings.Split(strings.TrimSpace(out), "\n")) != 3 || !strings.Contains(out, `\"value\":6`) && !strings.Contains(out, `"value":6`) {
		t.Fatalf("watch: exit %d %s %s", code, out, errOut)
	}
	if out, errOut, code := rhizonAs(t, n0, clusterToken, "replay", "--entity", "wcounter/c1"); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("replay: exit %d %s %s", code, out, errOut)
	}

	// Revision 2 rolled out under load.
	load := c.startWasmLoad(4)
	testkit.Eventually(t, 60*time.Second, "load warmed up", load.atLeast(100))
	if out, errOut, code := rhizonAs(t, n0, clusterToken, "actor", "deploy", v2, "--type", "wcounter", "--revision", "2"); code != 0 {
		t.Fatalf("deploy revision 2: exit %d %s %s", code, out, errOut)
	}
	testkit.Eventually(t, 60*time.Second, "load flowing after the deploy", load.atLeast(200))
	if out, errOut, code := rhizonAs(t, n1, clusterToken, "actor", "activate", "--type", "wcounter", "--revision", "2"); code != 0 {
		t.Fatalf("activate revision 2: exit %d %s %s", code, out, errOut)
	}
	load.switched.Store(true)
	testkit.Eventually(t, 60*time.Second, "load flowing after the switch-over", load.atLeast(400))

	// A node restarted mid-load loads both revisions from the control state
	// before its shards apply, and catches up.
	n2.kill()
	n2.start(t)
	c.waitServing(n2, 90*time.Second)
	// It has no --wasm-actor: what it gossips it loaded from the control state.
	testkit.Poll{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, n2.id+" has both revisions", func() error {
		out, _, code := rhizonAs(t, n0, clusterToken, "actor", "list", "-o", "json")
		rows = nil
		if code != 0 || json.Unmarshal([]byte(out), &rows) != nil {
			return fmt.Errorf("actor list: exit %d %s", code, out)
		}
		for _, r := range rows {
			if r.Type == "wcounter" && slices.Contains(r.Revisions["1"], n2.id) && slices.Contains(r.Revisions["2"], n2.id) {
				return nil
			}
		}
		return fmt.Errorf("actor list: %s", out)
	})
	testkit.Eventually(t, 60*time.Second, "load flowing after the restart", load.atLeast(600))
	close(load.quit)
	load.wg.Wait()
	c.waitConverged(n0, 90*time.Second) // equal applied indexes and state hashes

	entities := map[string]bool{}
	for _, e := range load.acked {
		entities[e] = true
	}
	decided := map[string]string{} // command id -> event amount on n0
	byAmount := map[string]int{}
	for ni, p := range c.nodes {
		cl := c.client(p)
		seen := map[string]int{}
		for e := range entities {
			tok := ""
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				h, err := cl.History(ctx, &pb.HistoryRequest{Address: &pb.Address{ActorType: "wcounter", EntityId: e},
					PageSize: 1000, PageToken: tok, Consistency: pb.Consistency_CONSISTENCY_STALE})
				cancel()
				if err != nil {
					t.Fatalf("history of %s on %s: %v", e, p.id, err)
				}
				for _, r := range h.Records {
					ev := r.GetEvent()
					var a struct {
						Amount json.Number `json:"amount"`
					}
					if err := json.Unmarshal(ev.GetPayload(), &a); err != nil {
						t.Fatalf("event %s on %s: %v", ev.GetId(), p.id, err)
					}
					id := ev.GetCommandId()
					seen[id]++
					if ni == 0 {
						decided[id] = a.Amount.String()
						byAmount[a.Amount.String()]++
					} else if decided[id] != a.Amount.String() {
						t.Fatalf("command %s decided as %s on %s, %s on %s", id, a.Amount, p.id, decided[id], n0.id)
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
				t.Fatalf("command %s, sent after the switch-over, decided with amount %q (revision 2 doubles)", k, decided["cmd-"+k])
			}
		}
	}
	if byAmount["1"] == 0 || byAmount["2"] == 0 {
		t.Fatalf("events by amount %v: want both revisions", byAmount)
	}
	t.Logf("%d commands acknowledged; events by amount (1: revision 1, 2: revision 2) %v", len(load.acked), byAmount)
	if out, errOut, code := rhizonAs(t, n2, clusterToken, "replay", "--entity", "wcounter/l1"); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("replay after the roll-out on the restarted node: exit %d %s %s", code, out, errOut)
	}
}
