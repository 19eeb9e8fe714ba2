//go:build dockere2e

// The Compose cluster under faults, with real containers: run by
// `make deploy-e2e-faults` (build tag dockere2e) after `make image-local`.
package deploy

import (
	"context"
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

const (
	e2eProject = "rhizone2e"
	e2eToken   = "docker-e2e-token-0123456789abcdef"
	e2ePrefix  = "2" // published ports 2100, 2200, 2300
)

type compose struct {
	t   *testing.T
	env []string
}

func (c *compose) run(args ...string) string {
	c.t.Helper()
	cmd := exec.Command("docker-compose", append([]string{"-p", e2eProject, "-f", "compose/docker-compose.yml"}, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("docker-compose %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func docker(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("docker", args...).CombinedOutput(); err != nil {
		t.Fatalf("docker %v: %v\n%s", args, err, out)
	}
}

// waitFor polls f every half second (each call asks a container over the
// network) until it returns nil.
func waitFor(t *testing.T, total time.Duration, what string, f func() error) {
	t.Helper()
	testkit.Poll{Timeout: total, Every: 500 * time.Millisecond}.EventuallyNil(t, what, f)
}

// ackedMore is a condition: the writers acknowledged n more commands than
// when it was made.
func ackedMore(acks *atomic.Int64, n int64) func() (bool, string) {
	from := acks.Load()
	return func() (bool, string) {
		got := acks.Load() - from
		return got >= n, fmt.Sprintf("%d acknowledgements, want %d", got, n)
	}
}

// converged: every shard has 3 replicas on 3 nodes with one leader, and
// equal hashes at equal indexes.
func converged(st *pb.StatusResponse) error {
	by := map[uint32][]*pb.ShardStatus{}
	for _, s := range st.Shards {
		by[s.Shard] = append(by[s.Shard], s)
	}
	if len(by) == 0 || uint32(len(by)) != st.ShardCount {
		return fmt.Errorf("status covers %d of %d shards", len(by), st.ShardCount)
	}
	for id, reps := range by {
		leaders := 0
		for _, r := range reps {
			if r.Role == "Leader" {
				leaders++
			}
			if r.AppliedIndex != reps[0].AppliedIndex || r.StateHash != reps[0].StateHash {
				return fmt.Errorf("shard %d replicas differ", id)
			}
		}
		if len(reps) != 3 || leaders != 1 {
			return fmt.Errorf("shard %d: %d replicas, %d leaders", id, len(reps), leaders)
		}
	}
	return nil
}

// ledWithout: every shard has one leader, and it is not on node dead (whose
// replicas are missing from the status: it does not answer).
func ledWithout(st *pb.StatusResponse, dead string) error {
	leaders := map[uint32]string{}
	for _, s := range st.Shards {
		if s.Role == "Leader" {
			if _, two := leaders[s.Shard]; two {
				return fmt.Errorf("shard %d has two leaders", s.Shard)
			}
			leaders[s.Shard] = s.NodeId
		}
	}
	for id := range st.ShardCount {
		switch l, ok := leaders[id]; {
		case !ok:
			return fmt.Errorf("shard %d has no leader", id)
		case l == dead:
			return fmt.Errorf("shard %d is led by the dead %s", id, l)
		}
	}
	return nil
}

// caughtUp is converged while writers run: replicas at the same applied
// index have the same state hash, and none is more than 200 entries behind
// its shard's most advanced replica (followers learn the commit index with
// the next append, so under load equal indexes are a matter of luck).
func caughtUp(st *pb.StatusResponse) error {
	by := map[uint32][]*pb.ShardStatus{}
	for _, s := range st.Shards {
		by[s.Shard] = append(by[s.Shard], s)
	}
	if len(by) == 0 || uint32(len(by)) != st.ShardCount {
		return fmt.Errorf("status covers %d of %d shards", len(by), st.ShardCount)
	}
	for id, reps := range by {
		leaders, top := 0, uint64(0)
		hashAt := map[uint64]string{}
		for _, r := range reps {
			if r.Role == "Leader" {
				leaders++
			}
			top = max(top, r.AppliedIndex)
			if h, ok := hashAt[r.AppliedIndex]; ok && h != r.StateHash {
				return fmt.Errorf("shard %d: replicas at index %d differ", id, r.AppliedIndex)
			}
			hashAt[r.AppliedIndex] = r.StateHash
		}
		if len(reps) != 3 || leaders != 1 {
			return fmt.Errorf("shard %d: %d replicas, %d leaders", id, len(reps), leaders)
		}
		for _, r := range reps {
			if top-r.AppliedIndex > 200 {
				return fmt.Errorf("shard %d: %s at %d, %d behind", id, r.NodeId, r.AppliedIndex, top-r.AppliedIndex)
			}
		}
	}
	return nil
}

func TestCompose_KillAndDisconnectLoseNothing(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.json")
	body := fmt.Sprintf(`{"tokens":[{"token":%q,"role":"admin","principal":{"id":"e2e","type":"user"},"scopes":[{"tenant":"t","workspace":"*"}]}]}`, e2eToken)
	if err := os.WriteFile(tokens, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &compose{t: t, env: []string{
		"RHIZON_CLUSTER_SECRET=docker-e2e-secret", "RHIZON_TOKEN_FILE=" + tokens,
		"RHIZON_PORT_PREFIX=" + e2ePrefix, "RHIZON_SHARDS=8", "RHIZON_DEAD_AFTER=5m",
	}}
	t.Cleanup(func() {
		cmd := exec.Command("docker-compose", "-p", e2eProject, "-f", "compose/docker-compose.yml", "down", "-v", "--timeout", "5")
		cmd.Env = append(os.Environ(), c.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("teardown: %v\n%s", err, out)
		}
	})
	c.run("up", "-d")

	nodes := []string{"n1", "n2", "n3"}
	clients := map[string]*client.Client{}
	for i, n := range nodes {
		cl, err := client.Dial(fmt.Sprintf("127.0.0.1:%s%d00", e2ePrefix, i+1), client.WithToken(e2eToken), client.WithRetries(0))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		clients[n] = cl
	}
	status := func(from string) (*pb.StatusResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return clients[from].Status(ctx)
	}
	waitFor(t, 3*time.Minute, "cluster converged", func() error {
		st, err := status("n1")
		if err != nil {
			return err
		}
		return converged(st)
	})

	// Writers through every node, each command retried with its key until acknowledged.
	var (
		mu    sync.Mutex
		acked = map[string]string{}
		acks  atomic.Int64
		quit  = make(chan struct{})
		wg    sync.WaitGroup
		seq   atomic.Int64
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				n := seq.Add(1)
				key, entity := fmt.Sprintf("w%d-%d", w, n), fmt.Sprintf("e%d", n%16)
				req := &pb.SubmitRequest{Address: &pb.Address{ActorType: "counter", EntityId: entity}, Type: "cmd.counter.add",
					Payload: []byte(`{"amount":1}`), IdempotencyKey: key, CommandId: "cmd-" + key}
				for attempt := 0; attempt < 200; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := clients[nodes[(i+attempt)%3]].Submit(ctx, req)
					cancel()
					if err == nil && resp.Result.Status == pb.Status_STATUS_ACCEPTED {
						mu.Lock()
						acked[key] = entity
						mu.Unlock()
						acks.Add(1)
						break
					}
					time.Sleep(50 * time.Millisecond) // back off before the next node: not a wait for a state
				}
			}
		}()
	}
	testkit.Eventually(t, time.Minute, "writers under way", ackedMore(&acks, 20))

	// docker kill the container leading the most shards; keep writing; restart it.
	st, err := status("n2")
	if err != nil {
		t.Fatal(err)
	}
	leads := map[string]int{}
	for _, s := range st.Shards {
		if s.Role == "Leader" {
			leads[s.NodeId]++
		}
	}
	victim := "n1"
	for _, n := range nodes {
		if leads[n] > leads[victim] {
			victim = n
		}
	}
	container := c.run("ps", "-q", victim)
	other := "n2"
	if victim == "n2" {
		other = "n3"
	}
	docker(t, "kill", container)
	testkit.Eventually(t, 5*time.Second, "acknowledgements after killing "+victim, ackedMore(&acks, 1))
	// Keep writing until the survivors lead the victim's shards too and
	// have acknowledged more through them; then restart it.
	waitFor(t, time.Minute, "survivors lead every shard", func() error {
		st, err := status(other)
		if err != nil {
			return err
		}
		return ledWithout(st, victim)
	})
	testkit.Eventually(t, 30*time.Second, "acknowledgements after the failover", ackedMore(&acks, 50))
	docker(t, "start", container)
	waitFor(t, 2*time.Minute, "restarted "+victim+" caught up", func() error {
		st, err := status(other)
		if err != nil {
			return err
		}
		return caughtUp(st) // the writers still run
	})
	t.Logf("killed %s (leading %d of %d shards) and restarted it; %d acknowledged so far", victim, leads[victim], st.ShardCount, acks.Load())

	// Cut one node off the network for 20 s: the majority keeps serving.
	cut := "n3"
	if victim == "n3" {
		cut = "n2"
	}
	cutContainer := c.run("ps", "-q", cut)
	network := e2eProject + "_default"
	docker(t, "network", "disconnect", network, cutContainer)
	before := acks.Load()
	// The fault's length is the scenario (20 s apart from the cluster, far
	// behind its peers' logs), not a wait for a state.
	time.Sleep(20 * time.Second)
	during := acks.Load() - before
	docker(t, "network", "connect", "--alias", cut, network, cutContainer)
	if during == 0 {
		t.Fatalf("the majority acknowledged nothing while %s was disconnected", cut)
	}
	close(quit)
	wg.Wait()
	waitFor(t, 2*time.Minute, "converged after the reconnect", func() error {
		st, err := status(victim)
		if err != nil {
			return err
		}
		return converged(st)
	})
	t.Logf("%s disconnected for 20 s: %d acknowledgements meanwhile; %d in all", cut, during, len(acked))

	// The cut node caught up (the convergence above compares its replicas'
	// state over the cluster network). Reconnecting does not restore the
	// container's published host ports (Docker keeps forwarding to its old
	// address), so restart it to read its replicas from here.
	docker(t, "restart", "-t", "5", cutContainer)
	_ = clients[cut].Close()
	fresh, err := client.Dial(fmt.Sprintf("127.0.0.1:%s%d00", e2ePrefix, slices.Index(nodes, cut)+1), client.WithToken(e2eToken), client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	clients[cut] = fresh
	waitFor(t, 2*time.Minute, "restarted "+cut+" converged", func() error {
		st, err := status(cut)
		if err != nil {
			return err
		}
		return converged(st)
	})

	// Every acknowledged command is on every node exactly once.
	entities := map[string][]string{}
	for k, e := range acked {
		entities[e] = append(entities[e], k)
	}
	for _, n := range nodes {
		for e, keys := range entities {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			seen := map[string]int{}
			tok := ""
			for {
				h, err := clients[n].History(ctx, &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: e},
					PageSize: 1000, PageToken: tok, Consistency: pb.Consistency_CONSISTENCY_STALE})
				if err != nil {
					cancel()
					t.Fatalf("history of %s on %s: %v", e, n, err)
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
					t.Fatalf("on %s, acknowledged %s appears %d times", n, k, seen["cmd-"+k])
				}
			}
		}
	}
}
