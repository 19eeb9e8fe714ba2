package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

// rhizonEnv runs the CLI with env added: stdout, stderr and the exit code.
func rhizonEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("rhizon %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

func atoi(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// A `rhizon dev` node records commands of the planted actor; `rhizon replay`
// of its data directory by a build whose Decide differs (the planted
// actor's skew) exits 4 and names the first differing position: the first
// planted command's index, with both results. An --entity with no recorded
// command is not a bare "identical": stderr says nothing was compared.
func TestCLI_ReplayOfAChangedDecideExitsDivergedNamingThePosition(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, dir)
	var first uint64
	for i := range 3 {
		out, code := p.rhizon(t, "send", "planted/p1", "add", `{"amount":1}`, "-o", "json")
		r := decode[struct {
			Accepted bool   `json:"accepted"`
			Index    uint64 `json:"index"`
		}](t, out)
		if code != 0 || !r.Accepted || r.Index == 0 {
			t.Fatalf("send %d: exit %d %s", i, code, out)
		}
		if i == 0 {
			first = r.Index
		}
	}
	out, _ := p.rhizon(t, "get", "planted/p1", "-o", "json")
	a := decode[struct {
		Address struct{ Tenant, Workspace string }
	}](t, out).Address
	live := []string{"RHIZON_ADDR=" + p.addr, "RHIZON_TOKEN=" + p.token}
	if out, errOut, code := rhizonEnv(t, live, "replay", "--entity", "planted/nobody"); code != 0 ||
		!strings.Contains(errOut, "note: planted/nobody has no recorded command") || !strings.Contains(errOut, "none of its commands was compared") {
		t.Fatalf("live replay of an entity with no history: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if _, errOut, code := rhizonEnv(t, live, "replay", "--entity", "planted/p1"); code != 0 || strings.Contains(errOut, "note:") {
		t.Fatalf("live replay of planted/p1: exit %d, stderr %s", code, errOut)
	}
	p.kill()

	if out, code := p.rhizon(t, "replay", "--data-dir", dir); code != 0 || strings.Contains(out, "DIVERGED") {
		t.Fatalf("replay by the recording build: exit %d\n%s", code, out)
	}
	scope := []string{"--tenant", a.Tenant, "--workspace", a.Workspace}
	if out, errOut, code := rhizonEnv(t, nil, append([]string{"replay", "--data-dir", dir, "--entity", "planted/nobody"}, scope...)...); code != 0 ||
		!strings.Contains(out, "identical") || !strings.Contains(errOut, "none of its commands was compared") {
		t.Fatalf("offline replay of an entity with no history: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	out, errOut, code := rhizonEnv(t, []string{"RHIZON_PLANTED_SKEW=1"}, "replay", "--data-dir", dir)
	want := regexp.MustCompile(fmt.Sprintf(`shard \d+: DIVERGED at index %d \(result\), command \S+ on \S*planted/p1`, first))
	if code != exitDiverged || !want.MatchString(out) || !strings.Contains(out, `"amount":1`) || !strings.Contains(out, `"amount":2`) {
		t.Fatalf("replay with a changed Decide: exit %d (want %d), want %q\nstdout %s\nstderr %s", code, exitDiverged, want, out, errOut)
	}
}

// Divergence on line, with real processes: n3 runs the planted actor with
// another skew (same revision, different decisions). Its replica of the
// planted entity's shard finds its hash differs from the leader's state
// check and stops: it applies nothing more, serves no read, shows halted
// in `status`, FAILED in /readyz and gRPC health, counts
// rhizon_shard_diverged_total and logs the position and both hashes. Then
// `rhizon replica reset` (n3 stopped) and a restart with the fixed build
// rebuild it from the healthy replicas: the same state hash as theirs, and
// it serves reads again.
func TestCluster_DivergedReplicaFailsStopsAndResetRebuildsIt(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	n1, n3 := c.nodes[0], c.nodes[2]
	n3.env = []string{"RHIZON_PLANTED_SKEW=1"}
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(n1, 60*time.Second)
	// An entity of a shard n1 or n2 leads: a diverged leader would halt
	// the healthy followers instead. Wait until the controller spread
	// leaderships (n3 leads one), so the choice stays.
	var addr *pb.Address
	var id uint32
	testkit.Poll{Timeout: 60 * time.Second, Every: 250 * time.Millisecond}.EventuallyNil(t, "n3 leads a shard, and another one is not n3's", func() error {
		st, err := c.status(n1)
		if err != nil {
			return err
		}
		leader := map[uint32]string{}
		for _, r := range st.Shards {
			if r.Role == "Leader" {
				leader[r.Shard] = r.NodeId
			}
		}
		if !strings.Contains(fmt.Sprint(leader), "n3") {
			return fmt.Errorf("n3 leads no shard: %v", leader)
		}
		for k := range 1000 {
			a := actor.Address{Tenant: "t", Workspace: "w", ActorType: "planted", EntityID: fmt.Sprint("p", k)}
			id = shard.Of(a, st.ShardCount)
			if l := leader[id]; l != "" && l != "n3" {
				addr = pb.FromAddress(a)
				return nil
			}
		}
		return fmt.Errorf("no shard led by n1 or n2: %v", leader)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl1 := c.client(n1)
	submit := func(key string) {
		t.Helper()
		resp, err := cl1.Submit(ctx, &pb.SubmitRequest{Address: addr, Type: "cmd.planted.add", Payload: []byte(`{"amount":1}`), IdempotencyKey: key, CommandId: "cmd-" + key})
		if err != nil || resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("submit %s: %v %v", key, resp.GetResult(), err)
		}
	}
	replicaOf := func(st *pb.StatusResponse, node string) *pb.ShardStatus {
		for _, r := range st.Shards {
			if r.Shard == id && r.NodeId == node {
				return r
			}
		}
		return nil
	}
	// The leader proposes its hash every 64 applied entries: enough
	// commands for a check past the first planted one.
	var halted *pb.ShardStatus
	for k := 0; halted == nil; k++ {
		if k == 400 {
			t.Fatalf("n3's replica of shard %d did not halt after %d commands", id, k)
		}
		submit(fmt.Sprint("d", k))
		if k%16 == 15 {
			st, err := c.status(n1)
			if err != nil {
				t.Fatal(err)
			}
			if r := replicaOf(st, "n3"); r != nil && r.Halted {
				halted = r
			}
		}
	}
	if !strings.Contains(halted.HaltError, "diverged from the leader") {
		t.Fatalf("n3's replica halted for another reason: %s", halted.HaltError)
	}
	// It applies nothing more while the healthy replicas go on.
	for k := range 8 {
		submit(fmt.Sprint("after", k))
	}
	st, err := c.status(n1)
	if err != nil {
		t.Fatal(err)
	}
	if r, h := replicaOf(st, "n3"), replicaOf(st, "n1"); r == nil || h == nil || r.AppliedIndex != halted.AppliedIndex || h.AppliedIndex <= r.AppliedIndex {
		t.Fatalf("after halting: n3 %+v (halted at %d), n1 %+v", r, halted.AppliedIndex, h)
	}
	healthy, err := cl1.Get(ctx, &pb.GetRequest{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	// No read from the diverged replica: a stale read through n3 is the
	// leader's answer or an error, never n3's own state.
	got, err := c.client(n3).Get(ctx, &pb.GetRequest{Address: addr, Consistency: pb.Consistency_CONSISTENCY_STALE})
	if err == nil && (got.AppliedIndex == halted.AppliedIndex || !bytes.Equal(got.State, healthy.State)) {
		t.Fatalf("stale read through n3 served %s at %d; healthy state %s", got.State, got.AppliedIndex, healthy.State)
	}
	t.Logf("shard %d: n3 halted at %d; stale read through n3: %s at %d, %v", id, halted.AppliedIndex, got.GetState(), got.GetAppliedIndex(), err)
	_, r := waitHealth(t, n3, "FAILED", 20*time.Second)
	if r.Code != http.StatusServiceUnavailable || !strings.Contains(strings.Join(r.Reasons, "\n"), "diverged from the leader") {
		t.Errorf("n3 /readyz = %s, want 503 naming the divergence", r)
	}
	testkit.Poll{Timeout: 10 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "n3 gRPC health NOT_SERVING", func() error {
		if out, code := rhizonCLI(t, "health", "--addr", n3.grpc, "--service", pb.Gateway_ServiceDesc.ServiceName); code == 0 {
			return fmt.Errorf("rhizon health: exit 0 %s", out)
		}
		return nil
	})
	if out, _ := rhizonCLI(t, "status", "--addr", n3.grpc); !strings.Contains(out, "health FAILED (node n3)") || !strings.Contains(out, ",halted") {
		t.Errorf("rhizon status on n3:\n%s", out)
	}
	if n := sumSeries(scrape(t, "http://"+n3.http+"/metrics"), "rhizon_shard_diverged_total", fmt.Sprintf(`shard="%d"`, id)); n != 1 {
		t.Errorf("n3 rhizon_shard_diverged_total{shard=%d} = %v, want 1", id, n)
	}
	logged := regexp.MustCompile(`replica diverged from the leader; shard halted.*index=(\d+).*state hash at index (\d+) is ([0-9a-f]{64}) here, ([0-9a-f]{64}) on the leader`).
		FindStringSubmatch(n3.stderr.String())
	if logged == nil || logged[1] != logged[2] || logged[3] == logged[4] || atoi(logged[1]) > halted.AppliedIndex {
		t.Fatalf("n3's log has no line naming the position and both hashes:\n%s", tail(n3.stderr.String(), 3000))
	}

	// The documented way back: stop n3, reset its replica, start it with
	// the fixed build.
	n3.kill()
	if out, _, code := rhizonEnv(t, nil, "replica", "reset", "--data-dir", n3.dir, "--shard", fmt.Sprint(id)); code != 0 ||
		!strings.Contains(out, fmt.Sprintf("shard %d: replica reset", id)) {
		t.Fatalf("replica reset: exit %d %s", code, out)
	}
	n3.env = nil
	n3.start(t)
	waitHealth(t, n3, "READY", 60*time.Second)
	submit("rebuilt")
	c.waitConverged(n1, 60*time.Second) // every replica at the same index and state hash
	st, err = c.status(n3)
	if err != nil {
		t.Fatal(err)
	}
	if mine, lead := replicaOf(st, "n3"), replicaOf(st, "n1"); mine == nil || mine.Halted || mine.StateHash != lead.StateHash || mine.AppliedIndex != lead.AppliedIndex {
		t.Fatalf("n3's rebuilt replica %+v, n1's %+v", mine, lead)
	}
	want, err := cl1.Get(ctx, &pb.GetRequest{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	got, err = c.client(n3).Get(ctx, &pb.GetRequest{Address: addr, Consistency: pb.Consistency_CONSISTENCY_STALE})
	if err != nil || got.Version != want.Version || !bytes.Equal(got.State, want.State) {
		t.Fatalf("read through the rebuilt n3: %v %v, want version %d %s", got, err, want.Version, want.State)
	}
}
