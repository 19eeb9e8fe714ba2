package shard_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// planted is the counter with a nondeterministic Decide planted in one
// replica's build: it adds one more than asked for the amount 3.
type planted struct{ actor.Behavior }

func (p planted) Decide(ctx *actor.Context, state []byte, c *actor.Command) ([]actor.NewEvent, error) {
	if strings.Contains(string(c.Payload), `"amount":3}`) {
		c2 := *c
		c2.Payload = []byte(`{"amount":4}`)
		return p.Behavior.Decide(ctx, state, &c2)
	}
	return p.Behavior.Decide(ctx, state, c)
}

func plantedRegistry(t *testing.T) *actor.Registry {
	var bs []actor.Behavior
	for _, b := range builtin.All() {
		if b.Type() == "counter" {
			b = planted{b}
		}
		bs = append(bs, b)
	}
	reg, err := actor.NewRegistry(bs...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// lockedBuffer is a log destination safe for the shard's goroutines and
// the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tcpReplica is one replica of a 3-voter shard over Raft on TCP.
type tcpReplica struct {
	id    string
	cfg   shard.Config
	s     *shard.Shard
	state *storage.DB
	logs  *storage.RaftDB
	trans *raft.NetworkTransport
}

// TestPromise_Determinism_DivergentReplicaHalts: three replicas over real
// Raft (TCP) and Badger, one of them running an actor whose Decide differs.
// The leader's state hash rides in the log; the planted replica finds its
// hash differs at the same index, halts (applies nothing more, says why)
// and counts it; the other two agree and keep serving. Reset and started
// again with the fixed build, it rebuilds from them.
func TestPromise_Determinism_DivergentReplicaHalts(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var reps []*tcpReplica
	var peers []raft.Server
	for i := range 3 {
		r := &tcpReplica{id: fmt.Sprintf("n%d", i+1)}
		dir := t.TempDir()
		var err error
		if r.state, err = storage.Open(filepath.Join(dir, "state"), storage.Options{}); err != nil {
			t.Fatal(err)
		}
		if r.logs, err = storage.OpenRaft(filepath.Join(dir, "raft"), storage.Options{}); err != nil {
			t.Fatal(err)
		}
		if r.trans, err = tcpTransport("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, raft.Server{ID: raft.ServerID(r.id), Address: r.trans.LocalAddr()})
		reps = append(reps, r)
		t.Cleanup(func() {
			if r.s != nil {
				_ = r.s.Close()
			}
			_ = r.trans.Close()
			r.logs.Close()
			r.state.Close()
		})
	}
	n3log := &lockedBuffer{}
	for i, r := range reps {
		reg, logger := builtin.Registry(), quiet
		if r.id == "n3" {
			reg, logger = plantedRegistry(t), slog.New(slog.NewTextHandler(n3log, nil))
		}
		cfg := shard.Config{
			ID: 1, NodeID: r.id, Registry: reg, StateDB: r.state, RaftDB: r.logs, Logger: logger,
			Dir: filepath.Join(t.TempDir(), "shard"), Transport: r.trans, Bootstrap: i == 0, Peers: peers,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, TickInterval: 20 * time.Millisecond,
			HashCheckEvery: 2,
		}
		if r.id == "n3" {
			// It must not lead: a leader that diverged would make the
			// healthy followers halt instead (the shard then stops, which
			// is safe but not what this test looks at).
			cfg.HeartbeatTimeout, cfg.ElectionTimeout = 5*time.Second, 5*time.Second
		}
		r.cfg = cfg
		var err error
		if r.s, err = shard.Open(cfg); err != nil {
			t.Fatal(err)
		}
	}
	var leader *tcpReplica
	testkit.Eventually(t, 20*time.Second, "a leader among n1, n2", func() (bool, string) {
		for _, r := range reps[:2] {
			if r.s.IsLeader() {
				leader = r
				return true, ""
			}
		}
		return false, "no leader yet"
	})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "c"}
	submit := func(n int) {
		t.Helper()
		cmd := actor.Command{ID: fmt.Sprint("id", n), Type: "cmd.counter.add", Address: c, IdempotencyKey: fmt.Sprint("k", n),
			Payload: fmt.Appendf(nil, `{"amount":%d}`, n),
			Security: actor.Security{Principal: actor.Principal{ID: "u", Type: actor.PrincipalUser},
				Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}}
		if _, err := leader.s.Submit(ctx, cmd); err != nil {
			t.Fatalf("submit %d: %v", n, err)
		}
	}
	for n := 1; n <= 12; n++ {
		submit(n)
	}
	n3 := reps[2]
	testkit.EventuallyNil(t, 20*time.Second, "n3 halted for divergence", func() error {
		err := n3.s.Halted()
		if err == nil {
			return errors.New("n3 still applying")
		}
		if !errors.Is(err, shard.ErrHalted) || !strings.Contains(err.Error(), "diverged from the leader") {
			return fmt.Errorf("n3 halted for another reason: %v", err)
		}
		return nil
	})
	stuck := n3.s.Meta()
	// The healthy replicas agree and the shard keeps committing.
	for n := 13; n <= 16; n++ {
		submit(n)
	}
	testkit.EventuallyNil(t, 20*time.Second, "n1 and n2 at the same state", func() error {
		a, b := reps[0].s.Meta(), reps[1].s.Meta()
		if a != b {
			return fmt.Errorf("n1 %d %s, n2 %d %s", a.Index, a.HashHex(), b.Index, b.HashHex())
		}
		if reps[0].s.Halted() != nil || reps[1].s.Halted() != nil {
			return errors.New("a healthy replica halted")
		}
		return nil
	})
	if m := n3.s.Meta(); m != stuck {
		t.Fatalf("the diverged replica applied on after halting: %d -> %d", stuck.Index, m.Index)
	}
	if stuck.Index >= reps[0].s.Meta().Index {
		t.Fatalf("n3 at %d is not behind the healthy replicas at %d", stuck.Index, reps[0].s.Meta().Index)
	}
	// Its status says halted and why; its log names the position and both
	// hashes, and the leader's is the healthy replicas' hash there.
	if st := n3.s.Status(); !st.Halted || !strings.Contains(st.HaltError, "diverged from the leader") || st.AppliedIndex != stuck.Index {
		t.Fatalf("n3 status %+v", st)
	}
	m := regexp.MustCompile(`msg="replica diverged from the leader; shard halted".*index=(\d+) .*state hash at index (\d+) is ([0-9a-f]{64}) here, ([0-9a-f]{64}) on the leader`).
		FindStringSubmatch(n3log.String())
	if m == nil || m[1] != m[2] || m[3] == m[4] {
		t.Fatalf("n3's log does not name the position and both hashes:\n%s", n3log.String())
	}
	if at, _ := strconv.ParseUint(m[1], 10, 64); at == 0 || at > stuck.Index {
		t.Fatalf("divergence logged at %d, n3 stopped at %d", at, stuck.Index)
	}

	// Rebuild n3: stop it, reset its replica, start it with the fixed build
	// on the same address.
	if err := n3.s.Close(); err != nil {
		t.Fatal(err)
	}
	n3.s = nil
	addr := n3.trans.LocalAddr()
	_ = n3.trans.Close()
	if err := shard.Reset(n3.state, n3.logs, n3.cfg.Dir, n3.cfg.ID); err != nil {
		t.Fatal(err)
	}
	var err error
	if n3.trans, err = tcpTransport(string(addr)); err != nil {
		t.Fatal(err)
	}
	n3.cfg.Transport, n3.cfg.Registry, n3.cfg.Bootstrap = n3.trans, builtin.Registry(), false
	if n3.s, err = shard.Open(n3.cfg); err != nil {
		t.Fatal(err)
	}
	submit(17)
	testkit.EventuallyNil(t, 30*time.Second, "n3 rebuilt to the healthy state", func() error {
		want, got := reps[0].s.Meta(), n3.s.Meta()
		if got != want {
			return fmt.Errorf("n3 at %d %s, n1 at %d %s", got.Index, got.HashHex(), want.Index, want.HashHex())
		}
		return n3.s.Halted()
	})
}
