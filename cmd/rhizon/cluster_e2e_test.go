package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit"
)

const (
	clusterToken = "cluster-e2e-token-0123456789abcdef"
	opsToken     = "cluster-e2e-ops-token-0123456789ab"
	e2eSecret    = "e2e-secret"
)

// nodeProc is one `rhizon node` process with fixed ports, so it can be
// killed and restarted as the same member.
type nodeProc struct {
	id                     string
	dir                    string
	grpc, http, raft, goss string
	nats                   string // client address of the embedded NATS, when enabled
	args                   []string
	env                    []string // added to the test's environment
	cmd                    *exec.Cmd
	done                   chan struct{}
	stderr                 *syncBuffer
	mu                     sync.Mutex
}

type testCluster struct {
	t         testing.TB
	root      string
	nodes     []*nodeProc
	deadAfter time.Duration
	// clientOpts are added to every client of c (TLS, when the nodes
	// serve it).
	clientOpts []client.Option
}

// clusters admits one multi-node cluster at a time: on two cores, two of
// them electing with 300 ms timeouts next to each other lose leaders to CPU
// starvation. Single dev nodes and in-process tests run alongside.
var clusters = make(chan struct{}, 1)

// clusterSlot waits for the cluster slot and holds it until t ends.
func clusterSlot(t testing.TB) {
	t.Helper()
	clusters <- struct{}{}
	t.Cleanup(func() { <-clusters })
}

// newTestCluster prepares n nodes; a node must be dead for deadAfter before
// its replicas are replaced.
func newTestCluster(t testing.TB, n int, deadAfter time.Duration) *testCluster {
	t.Helper()
	needBinary(t)
	if n > 1 {
		clusterSlot(t)
	}
	c := &testCluster{t: t, root: t.TempDir(), deadAfter: deadAfter}
	tf := filepath.Join(c.root, "tokens.json")
	tokens := fmt.Sprintf(`{"tokens":[
		{"token":%q,"principal":{"id":"tester","type":"user"},"scopes":[{"tenant":"t","workspace":"*"}]},
		{"token":%q,"role":"admin","principal":{"id":"ops","type":"user"},"scopes":[{"tenant":"t","workspace":"*"}]}]}`, clusterToken, opsToken)
	if err := os.WriteFile(tf, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		c.add(i < 3, n)
	}
	t.Cleanup(func() {
		for _, p := range c.nodes {
			p.kill()
			if dir := os.Getenv("RHIZON_E2E_LOG_DIR"); dir != "" && p.stderr != nil {
				_ = os.WriteFile(filepath.Join(dir, p.id+".log"), []byte(p.stderr.String()), 0o644)
			}
			if t.Failed() && p.stderr != nil {
				t.Logf("--- %s (%v, grpc %s raft %s gossip %s) stderr:\n%s", p.id, p.cmd.ProcessState, p.grpc, p.raft, p.goss, tail(p.stderr.String(), 4000))
			}
		}
	})
	return c
}

// add prepares (does not start) a node; the first ones bootstrap together.
func (c *testCluster) add(founder bool, expect int) *nodeProc {
	i := len(c.nodes)
	p := &nodeProc{
		id: fmt.Sprintf("n%d", i+1), dir: filepath.Join(c.root, fmt.Sprintf("n%d", i+1)),
		grpc: testkit.FreeAddr(c.t), http: testkit.FreeAddr(c.t),
		raft: testkit.FreeAddr(c.t), goss: testkit.FreeAddr(c.t),
	}
	// One Raft group per shard (the shard count), as these tests were
	// written for: they name shards where grouped clusters name groups
	// (replay and republish --shard, halts, metrics). Grouped clusters,
	// the default, have tests of their own (groups_test.go).
	p.args = []string{"node", "--node-id", p.id, "--data-dir", p.dir, "--shards", "8", "--raft-groups", "8",
		"--grpc-addr", p.grpc, "--http-addr", p.http, "--raft-addr", p.raft, "--gossip-addr", p.goss,
		"--nats-addr", "off", "--token-file", filepath.Join(c.root, "tokens.json"),
		"--cluster-secret", e2eSecret, "--log-level", logLevel(), "--dead-after", c.deadAfter.String(),
		"--fast-gossip", "--raft-heartbeat-timeout", "300ms", "--raft-election-timeout", "300ms"}
	if len(c.nodes) > 0 {
		p.args = append(p.args, "--join", c.nodes[0].goss)
	}
	if founder {
		p.args = append(p.args, "--bootstrap-expect", fmt.Sprint(min(expect, 3)))
	}
	c.nodes = append(c.nodes, p)
	return p
}

// withoutFlag is args without flag name and its value.
func withoutFlag(args []string, name string) []string {
	if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
		return slices.Delete(slices.Clone(args), i, i+2)
	}
	return args
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (p *nodeProc) start(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(binary, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	p.stderr = &syncBuffer{}
	cmd.Stderr = p.stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
		}
		_ = cmd.Wait()
		close(p.done)
	}()
}

func (p *nodeProc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (c *testCluster) client(p *nodeProc) *client.Client {
	cl, err := client.Dial(p.grpc, append([]client.Option{client.WithToken(clusterToken), client.WithRetries(0)}, c.clientOpts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

func (c *testCluster) status(p *nodeProc) (*pb.StatusResponse, error) {
	// The full Status (indexes, state hashes, placement) is the admin's.
	cl, err := client.Dial(p.grpc, append([]client.Option{client.WithToken(opsToken), client.WithRetries(0)}, c.clientOpts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Status(ctx)
}

// waitConverged polls p's status until every shard has its 3 replicas,
// one leader and equal state on every replica.
func (c *testCluster) waitConverged(p *nodeProc, total time.Duration) {
	c.t.Helper()
	testkit.Poll{Timeout: total, Every: 200 * time.Millisecond}.EventuallyNil(c.t, "cluster converged", func() error {
		st, err := c.status(p)
		if err != nil {
			return err
		}
		return converged(st, 3)
	})
}

// mustStatus is p's status, asked again while p cannot answer (a busy or
// restarting node) for up to 30 s.
func (c *testCluster) mustStatus(p *nodeProc) *pb.StatusResponse {
	c.t.Helper()
	var st *pb.StatusResponse
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(c.t, "status of "+p.id, func() error {
		var err error
		st, err = c.status(p)
		return err
	})
	return st
}

// leaderOf polls p's status until shard has a leader and returns its node:
// a status taken once can fall between a leader's step-down and the next
// election (the controller moves leaders after a start or a failure).
func (c *testCluster) leaderOf(p *nodeProc, shard uint32) *nodeProc {
	c.t.Helper()
	var leader *nodeProc
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(c.t, fmt.Sprint("a leader of shard ", shard), func() error {
		st, err := c.status(p)
		if err != nil {
			return err
		}
		for _, sh := range st.Shards {
			if sh.Shard != shard || sh.Role != "Leader" {
				continue
			}
			for _, q := range c.nodes {
				if q.id == sh.NodeId {
					leader = q
					return nil
				}
			}
		}
		return fmt.Errorf("shard %d has no leader", shard)
	})
	return leader
}

// converged checks that every shard has a replica on each of want distinct
// nodes, one leader, and equal state hashes at equal applied indexes.
func converged(st *pb.StatusResponse, want int) error { return placed(st, want, true) }

// placed is converged without comparing the replicas' indexes and hashes
// unless strict (they move while writers run).
func placed(st *pb.StatusResponse, want int, strict bool) error {
	byShard := map[uint32][]*pb.ShardStatus{}
	for _, s := range st.Shards {
		byShard[s.Shard] = append(byShard[s.Shard], s)
	}
	if uint32(len(byShard)) != st.ShardCount || st.ShardCount == 0 {
		return fmt.Errorf("status covers %d of %d shards", len(byShard), st.ShardCount)
	}
	for id, reps := range byShard {
		nodes, leaders := map[string]bool{}, 0
		for _, r := range reps {
			nodes[r.NodeId] = true
			if r.Role == "Leader" {
				leaders++
			}
		}
		if len(nodes) != want || len(reps) != want {
			return fmt.Errorf("shard %d has %d replicas on %d nodes, want %d", id, len(reps), len(nodes), want)
		}
		if leaders != 1 {
			return fmt.Errorf("shard %d has %d leaders", id, leaders)
		}
		for _, r := range reps[1:] {
			if strict && (r.AppliedIndex != reps[0].AppliedIndex || r.StateHash != reps[0].StateHash) {
				return fmt.Errorf("shard %d replicas differ: %s@%d vs %s@%d", id, r.NodeId, r.AppliedIndex, reps[0].NodeId, reps[0].AppliedIndex)
			}
		}
	}
	return nil
}

func submitReq(entity, key string) *pb.SubmitRequest {
	return &pb.SubmitRequest{
		Address: &pb.Address{ActorType: "counter", EntityId: entity}, Type: "cmd.counter.add",
		Payload: []byte(`{"amount":1}`), IdempotencyKey: key, CommandId: "cmd-" + key,
	}
}

// submitThroughEach submits a counter command for each of entities e0..e<n-1>
// through every node's gateway (keys prefixed by prefix), failing unless each
// is accepted. A node forwards those whose shard another node leads.
func (c *testCluster) submitThroughEach(n int, prefix string) {
	c.t.Helper()
	for i, p := range c.nodes {
		cl := c.client(p)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		for j := range n {
			resp, err := cl.Submit(ctx, submitReq(fmt.Sprintf("e%d", j), fmt.Sprintf("%sn%d-%d", prefix, i, j)))
			if err != nil || resp.Result.Status != pb.Status_STATUS_ACCEPTED {
				cancel()
				c.t.Fatalf("submit through %s: %+v %v", p.id, resp, err)
			}
		}
		cancel()
	}
}

func TestCluster_ThreeNodesServeThroughAnyNodeAndAgree(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.args = withoutFlag(p.args, "--raft-groups")
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	// Without --raft-groups: one group per node the cluster was created
	// with, each led by one of them.
	if st, err := c.status(c.nodes[0]); err != nil || st.GetRaftGroups() != 3 {
		t.Fatalf("status: %d raft groups (%v), want 3: one per founding node by default", st.GetRaftGroups(), err)
	}
	c.submitThroughEach(20, "")
	for _, p := range c.nodes {
		cl := c.client(p)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		got, err := cl.Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "e7"}})
		cancel()
		if err != nil || got.Version != 3 {
			t.Fatalf("get through %s: %+v %v", p.id, got, err)
		}
	}
	c.waitConverged(c.nodes[2], 20*time.Second)
}

// TestCluster_AGracefulStopDoesNotWaitForPeersStreams: peers keep their
// ForwardStreams to a node open for as long as they run; a node stopped with
// SIGTERM ends them (after answering what they carried) instead of letting
// its gRPC server's graceful stop wait out its 5 s bound for them, and the
// forwarding node goes on to the next leader.
func TestCluster_AGracefulStopDoesNotWaitForPeersStreams(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	// Every command through n1 with leader routing off: n1 forwards those
	// of the groups n2 and n3 lead, over a ForwardStream to each.
	cl, err := client.Dial(c.nodes[0].grpc, append([]client.Option{client.WithToken(clusterToken), client.WithLeaderRouting(false)}, c.clientOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	submit := func(key string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := cl.Submit(ctx, submitReq("e"+key, key))
		if err != nil || resp.Result.Status != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("submit %s through n1: %+v %v", key, resp, err)
		}
	}
	for i := range 30 {
		submit(fmt.Sprint("before-", i))
	}
	victim := c.nodes[1]
	start := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-victim.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running 30 s after SIGTERM:\n%s", victim.id, tail(victim.stderr.String(), 3000))
	}
	took := time.Since(start)
	t.Logf("%s stopped %v after SIGTERM", victim.id, took)
	if took > 4*time.Second {
		t.Errorf("%s took %v to stop gracefully; the gRPC server's graceful stop waits 5 s for streams left open:\n%s",
			victim.id, took, tail(victim.stderr.String(), 3000))
	}
	for i := range 30 {
		submit(fmt.Sprint("after-", i))
	}
}

func TestCluster_LeaderFailoverUnderLoadLosesNothing(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
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

	load := c.startLoad(8, c.nodes)
	// Warm up: every shard takes writes before the gaps count.
	testkit.Eventually(t, 30*time.Second, "load warmed up", load.atLeast(200))
	load.resetGaps()
	before := load.count()
	victim.kill()
	// The measured window: it ends once writes flow again for a while after
	// the failover, so the gap across it is in maxGap. stop waits for each
	// writer's command in flight, so a slow one still counts in maxWait.
	testkit.Eventually(t, 60*time.Second, "load flowing after the failover", load.atLeast(before+400))
	acked := load.stop()
	t.Logf("killed %s (leading %d shards); max gap between acknowledgements %v; longest wait for one acknowledgement %v; %d commands acknowledged",
		victim.id, leads[victim.id], time.Duration(load.maxGap.Load()), time.Duration(load.maxWait.Load()), len(acked))
	// Election timeout here is 300 ms: a few of them, plus retries.
	if gap := time.Duration(load.maxGap.Load()); gap > 5*time.Second {
		t.Errorf("acknowledgements stopped for %v after killing the leader", gap)
	}
	if w := time.Duration(load.maxWait.Load()); w > 10*time.Second {
		t.Errorf("a command waited %v for its acknowledgement across the failover", w)
	}

	// Restart the victim: it catches up and every replica agrees.
	victim.start(t)
	c.waitConverged(c.nodes[0], 60*time.Second)
	c.verifyAcked(acked, c.nodes)
}

// load is a set of writers submitting counter commands with unique keys
// through the given nodes in turn, retrying each command (same key) until it
// is acknowledged.
type load struct {
	mu      sync.Mutex
	acked   map[string]string // key -> entity
	lastAck atomic.Int64
	maxGap  atomic.Int64 // longest time without any acknowledgement
	maxWait atomic.Int64 // longest time one command took to be acknowledged
	quit    chan struct{}
	wg      sync.WaitGroup
}

func (c *testCluster) startLoad(workers int, nodes []*nodeProc) *load {
	l := &load{acked: map[string]string{}, quit: make(chan struct{})}
	l.lastAck.Store(time.Now().UnixNano())
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
				key, entity := fmt.Sprintf("w%d-%d", w, n), fmt.Sprintf("e%d", n%16)
				req := submitReq(entity, key)
				began := time.Now()
				for attempt := 0; attempt < 100; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := clients[(i+attempt)%len(clients)].Submit(ctx, req)
					cancel()
					if err == nil && resp.Result.Status == pb.Status_STATUS_ACCEPTED {
						now := time.Now().UnixNano()
						if gap := now - l.lastAck.Swap(now); gap > l.maxGap.Load() {
							l.maxGap.Store(gap)
						}
						if wt := int64(time.Since(began)); wt > l.maxWait.Load() {
							l.maxWait.Store(wt)
						}
						l.mu.Lock()
						l.acked[key] = entity
						l.mu.Unlock()
						break
					}
					time.Sleep(20 * time.Millisecond) // back off before the retry: not a wait for a state
				}
			}
		}()
	}
	return l
}

func (l *load) resetGaps() {
	l.maxGap.Store(0)
	l.maxWait.Store(0)
	l.lastAck.Store(time.Now().UnixNano())
}

// count is how many commands have been acknowledged.
func (l *load) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// atLeast is a condition: n commands have been acknowledged.
func (l *load) atLeast(n int) func() (bool, string) {
	return func() (bool, string) {
		got := l.count()
		return got >= n, fmt.Sprintf("%d of %d acknowledged", got, n)
	}
}

// stop ends the writers and returns what was acknowledged.
func (l *load) stop() map[string]string {
	close(l.quit)
	l.wg.Wait()
	return l.acked
}

// verifyAcked checks, by reading each node's own replicas (stale reads), that
// every acknowledged command (key -> entity) is present exactly once and that
// no command took effect twice.
func (c *testCluster) verifyAcked(acked map[string]string, nodes []*nodeProc) {
	t := c.t
	t.Helper()
	entities := map[string][]string{}
	for k, e := range acked {
		entities[e] = append(entities[e], k)
	}
	for _, p := range nodes {
		cl := c.client(p)
		for e, keys := range entities {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			seen := map[string]int{}
			tok := ""
			for {
				h, err := cl.History(ctx, &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: e},
					PageSize: 1000, PageToken: tok, Consistency: pb.Consistency_CONSISTENCY_STALE})
				if err != nil {
					cancel()
					t.Fatalf("history of %s on %s: %v", e, p.id, err)
				}
				for _, r := range h.Records {
					seen[r.GetEvent().GetCommandId()]++
				}
				if tok = h.NextPageToken; tok == "" {
					break
				}
			}
			cancel()
			for _, k := range keys {
				if seen["cmd-"+k] != 1 {
					t.Fatalf("on %s, acknowledged command %s appears %d times in %s", p.id, k, seen["cmd-"+k], e)
				}
			}
			for id, n := range seen {
				if n > 1 {
					t.Fatalf("on %s, command %s took effect %d times", p.id, id, n)
				}
			}
		}
	}
}

func TestCluster_GrowsToFiveNodesAndReplacesADeadOne(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 3*time.Second)
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	load := c.startLoad(4, c.nodes[:3])
	n4, n5 := c.add(false, 3), c.add(false, 3)
	n4.start(t)
	n5.start(t)
	sawMoves := false
	holds := func(st *pb.StatusResponse) map[string]int {
		m := map[string]int{}
		for _, s := range st.Shards {
			m[s.NodeId]++
		}
		return m
	}
	testkit.Poll{Timeout: 90 * time.Second, Every: 250 * time.Millisecond}.EventuallyNil(t, "n4 and n5 take replicas and leaders", func() error {
		st, err := c.status(c.nodes[0])
		if err != nil {
			return err
		}
		if len(st.Rebalancing) > 0 {
			sawMoves = true
			return fmt.Errorf("rebalancing: %v", st.Rebalancing)
		}
		if err := placed(st, 3, false); err != nil {
			return err
		}
		h := holds(st)
		if h["n4"] == 0 || h["n5"] == 0 {
			return fmt.Errorf("new nodes hold no replicas yet: %v", h)
		}
		leads := map[string]int{}
		for _, s := range st.Shards {
			if s.Role == "Leader" {
				leads[s.NodeId]++
			}
		}
		for _, p := range c.nodes {
			if leads[p.id] > 3 {
				return fmt.Errorf("leaders not spread: %v", leads)
			}
		}
		return nil
	})
	st := c.mustStatus(c.nodes[0])
	t.Logf("after growth: replicas per node %v; saw moves in status: %v", holds(st), sawMoves)
	if !sawMoves {
		t.Error("status never showed the rebalancing in progress")
	}
	acked := load.stop()
	t.Logf("%d commands acknowledged during growth", len(acked))
	c.waitConverged(c.nodes[0], 30*time.Second)
	c.verifyAcked(acked, c.nodes)

	// n5 dies for good: after dead-after its replicas move to the others.
	n5.kill()
	testkit.Poll{Timeout: 90 * time.Second, Every: 250 * time.Millisecond}.EventuallyNil(t, "n5's replicas moved to the others", func() error {
		st, err := c.status(c.nodes[0])
		if err != nil {
			return err
		}
		if err := converged(st, 3); err != nil {
			return err
		}
		for _, s := range st.Shards {
			for _, v := range append(s.Voters, s.Learners...) {
				if v == "n5" {
					return fmt.Errorf("shard %d still placed on the dead n5", s.Shard)
				}
			}
		}
		return nil
	})
	c.verifyAcked(acked, c.nodes[:4])

	// Drain n4 with the CLI: its replicas and leaderships move to n1..n3.
	drain := exec.Command(binary, "drain", "n4", "--wait", "--timeout", "90s", "--addr", c.nodes[0].grpc, "--token", opsToken)
	if out, err := drain.CombinedOutput(); err != nil {
		t.Fatalf("rhizon drain n4: %v\n%s", err, out)
	}
	testkit.Poll{Timeout: 30 * time.Second, Every: 250 * time.Millisecond}.EventuallyNil(t, "n4 drained", func() error {
		st, err := c.status(c.nodes[0])
		if err != nil {
			return err
		}
		if h := holds(st); h["n4"] != 0 {
			return fmt.Errorf("drained n4 still holds %d replicas", h["n4"])
		}
		return converged(st, 3)
	})
	c.verifyAcked(acked, c.nodes[:3])
}

// logLevel of the cluster tests' nodes: warn, or RHIZON_E2E_LOG_LEVEL.
func logLevel() string {
	if l := os.Getenv("RHIZON_E2E_LOG_LEVEL"); l != "" {
		return l
	}
	return "warn"
}
