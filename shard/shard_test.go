package shard_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// replica is one single-voter shard over real Badger stores in dir.
type replica struct {
	t     *testing.T
	dir   string
	state *storage.DB
	logs  *storage.RaftDB
	s     *shard.Shard
}

func openReplica(t *testing.T, dir string, tune func(*shard.Config)) *replica {
	t.Helper()
	r := &replica{t: t, dir: dir}
	var err error
	if r.state, err = storage.Open(filepath.Join(dir, "state"), storage.Options{}); err != nil {
		t.Fatal(err)
	}
	if r.logs, err = storage.OpenRaft(filepath.Join(dir, "raft"), storage.Options{}); err != nil {
		t.Fatal(err)
	}
	_, tr := raft.NewInmemTransport("")
	cfg := shard.Config{
		ID: 3, NodeID: "n1", Registry: builtin.Registry(), StateDB: r.state, RaftDB: r.logs,
		Dir: filepath.Join(dir, "shard"), Transport: tr, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	if r.s, err = shard.Open(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	testkit.Eventually(t, 10*time.Second, "a leader", func() (bool, string) {
		return r.s.IsLeader(), "not the leader"
	})
	return r
}

func (r *replica) close() {
	if r.s == nil {
		return
	}
	if err := r.s.Close(); err != nil {
		r.t.Errorf("close shard: %v", err)
	}
	r.logs.Close()
	r.state.Close()
	r.s = nil
}

var user = actor.Security{Principal: actor.Principal{ID: "u", Type: actor.PrincipalUser},
	Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}

func add(id string, n int) actor.Command {
	return actor.Command{
		ID: fmt.Sprintf("cmd-%s-%d", id, n), Type: "cmd.counter.add",
		Address: actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: id},
		Payload: []byte(`{"amount":1}`), IdempotencyKey: fmt.Sprintf("k-%s-%d", id, n), Security: user,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// submitAll sends n commands from 16 concurrent callers.
func submitAll(t *testing.T, s *shard.Shard, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				res, err := s.Submit(ctx(t), add(fmt.Sprint("c", i%10), i))
				if err == nil && res.Status != actor.StatusAccepted {
					err = fmt.Errorf("rejected: %+v", res)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestShard_GroupCommitPacksConcurrentCommandsIntoFewEntries(t *testing.T) {
	r := openReplica(t, t.TempDir(), nil)
	before := r.s.Meta().Index
	submitAll(t, r.s, 400)
	entries := r.s.Meta().Index - before
	if entries >= 400 {
		t.Fatalf("400 concurrent commands took %d entries; the proposer did not batch", entries)
	}
	t.Logf("400 commands in %d entries", entries)
}

// TestShard_BusyShardLingersForFullerEntries checks the proposer's linger:
// once entries carry several commands, the proposer waits up to
// ProposeLinger for more before proposing, so 16 callers in a closed loop
// share one entry per round; a command on an idle shard is proposed at once.
// The lingers are long here (the default is 1 ms) so that scheduling noise
// can neither split a round nor pass for a linger.
func TestShard_BusyShardLingersForFullerEntries(t *testing.T) {
	idle := openReplica(t, t.TempDir(), func(c *shard.Config) { c.ProposeLinger = 2 * time.Second })
	for i := range 3 {
		start := time.Now()
		if _, err := idle.s.Submit(ctx(t), add("idle", i)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d >= time.Second {
			t.Fatalf("a command on an idle shard took %v: it waited for the 2 s linger", d)
		}
	}

	r := openReplica(t, t.TempDir(), func(c *shard.Config) { c.ProposeLinger = 100 * time.Millisecond })
	before := r.s.Meta().Index
	submitAll(t, r.s, 400)
	entries := r.s.Meta().Index - before
	// 25 rounds of 16, plus the first entries before the shard counts as
	// busy, plus the odd round split by a caller that was slow to resubmit.
	// Without the linger it took 49.
	if entries > 32 {
		t.Fatalf("400 commands from 16 callers took %d entries, want at most 32: the busy proposer did not linger", entries)
	}
	t.Logf("400 commands in %d entries", entries)
}

// TestShard_CallerTakesBackCommandWhileProposerLingers checks that a command
// waiting out a busy proposer's linger is still the caller's to take back:
// its context ends during the wait, Submit says it was not applied (the
// context's error, not ErrUnknownOutcome), and no entry ever carries it,
// while a command queued beside it is applied.
func TestShard_CallerTakesBackCommandWhileProposerLingers(t *testing.T) {
	const linger = time.Second
	r := openReplica(t, t.TempDir(), func(c *shard.Config) { c.ProposeLinger = linger })
	for attempt := range 10 {
		// A burst of 8 callers, so that the last entry carries several
		// commands and the proposer lingers before the next one.
		var wg sync.WaitGroup
		for j := range 8 {
			wg.Go(func() {
				if _, err := r.s.Submit(ctx(t), add(fmt.Sprintf("burst-%d-%d", attempt, j), 0)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()

		back, kept := add(fmt.Sprint("taken-back-", attempt), 0), add(fmt.Sprint("kept-", attempt), 0)
		keptDone := make(chan error, 1)
		go func() {
			res, err := r.s.Submit(ctx(t), kept)
			if err == nil && res.Status != actor.StatusAccepted {
				err = fmt.Errorf("kept command: %+v", res)
			}
			keptDone <- err
		}()
		short, cancel := context.WithTimeout(context.Background(), linger/5)
		_, err := r.s.Submit(short, back)
		cancel()
		if err == nil {
			// The burst's last entry was small: the proposer did not linger.
			if err := <-keptDone; err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, shard.ErrUnknownOutcome) {
			t.Fatalf("Submit whose context ended while queued: %v, want the context's error alone", err)
		}
		if err := <-keptDone; err != nil {
			t.Fatalf("the command queued beside it: %v", err)
		}
		if ent, err := r.s.Store().Entity(back.Address); err != nil || ent.Version != 0 {
			t.Fatalf("taken-back command applied anyway: entity at version %d (%v)", ent.Version, err)
		}
		res, err := r.s.Submit(ctx(t), back)
		if err != nil || res.Replay || res.Duplicate || res.Version != 1 {
			t.Fatalf("the taken-back command sent again: %+v %v, want a first application at version 1", res, err)
		}
		return
	}
	t.Fatal("the proposer never lingered after a burst of 8 callers in 10 tries")
}

func TestShard_SnapshotCompactsLogAndRestartResumes(t *testing.T) {
	dir := t.TempDir()
	tune := func(c *shard.Config) { c.SnapshotThreshold, c.TrailingLogs, c.MaxBatch = 16, 8, 4 }
	r := openReplica(t, dir, tune)
	submitAll(t, r.s, 300)
	if err := r.s.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	first, err := r.logs.Shard(3).FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first <= 1 {
		t.Fatalf("log not compacted after a snapshot: first index %d", first)
	}
	meta := r.s.Meta()
	r.close()

	r = openReplica(t, dir, tune)
	if got := r.s.Meta(); got.Index < meta.Index || (got.Index == meta.Index && got.Hash != meta.Hash) {
		t.Fatalf("after restart: %+v, before %+v", got, meta)
	}
	// Re-sending an early command (whose entry was compacted away) still
	// finds it applied: a replay, since it is the same command.
	res, err := r.s.Submit(ctx(t), add("c0", 0))
	if err != nil || !res.Replay || res.Duplicate {
		t.Fatalf("re-send after compaction and restart: %+v %v", res, err)
	}
	ent, err := r.s.Store().Entity(add("c0", 0).Address)
	if err != nil || ent.Version != 30 {
		t.Fatalf("c0 at version %d (%v), want 30", ent.Version, err)
	}
}

func TestShard_RestoreFromSnapshotReplacesState(t *testing.T) {
	a := openReplica(t, t.TempDir(), nil)
	submitAll(t, a.s, 100)
	f := a.s.Raft().Snapshot()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	b := openReplica(t, t.TempDir(), nil)
	if _, err := b.s.Submit(ctx(t), add("only-on-b", 1)); err != nil {
		t.Fatal(err)
	}
	if err := b.s.Raft().Restore(meta, rc, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := b.s.Meta().Hash, a.s.Meta().Hash; got != want {
		t.Fatalf("state hash after restore %x, want %x", got, want)
	}
	if ent, _ := b.s.Store().Entity(add("only-on-b", 1).Address); ent.Version != 0 {
		t.Fatalf("restore kept state that was not in the snapshot: %+v", ent)
	}
	if ent, _ := b.s.Store().Entity(add("c3", 3).Address); ent.Version != 10 {
		t.Fatalf("restored c3 at version %d, want 10", ent.Version)
	}
}

func TestShard_SubmitOnFollowerIsNotLeaderAndNotApplied(t *testing.T) {
	r := openReplica(t, t.TempDir(), nil)
	if err := r.s.Raft().Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	_, err := r.s.Submit(ctx(t), add("x", 1))
	if err != shard.ErrNotLeader {
		t.Fatalf("submit to a stopped replica: %v, want ErrNotLeader", err)
	}
}

func TestShard_LostStateStoreIsRebuiltFromSnapshotAndLog(t *testing.T) {
	dir := t.TempDir()
	tune := func(c *shard.Config) { c.SnapshotThreshold, c.TrailingLogs = 1<<20, 1<<20 }
	r := openReplica(t, dir, tune)
	submitAll(t, r.s, 100)
	if err := r.s.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	submitAll(t, r.s, 50) // entries after the snapshot, only in the log
	want := r.s.Meta()
	r.close()
	if err := os.RemoveAll(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	r = openReplica(t, dir, tune)
	testkit.Eventually(t, 10*time.Second, "the log replayed", func() (bool, string) {
		got := r.s.Meta().Index
		return got >= want.Index, fmt.Sprintf("applied index %d, want %d", got, want.Index)
	})
	if got := r.s.Meta(); got.Index != want.Index || got.Hash != want.Hash {
		t.Fatalf("rebuilt state %d %x, want %d %x", got.Index, got.Hash, want.Index, want.Hash)
	}
}

func TestShard_SpansForSubmitProposeApply(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	r := openReplica(t, t.TempDir(), nil)
	if _, err := r.s.Submit(ctx(t), add("traced", 1)); err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, sp := range rec.Ended() {
		names[sp.Name()]++
	}
	for _, n := range []string{"shard.submit", "shard.propose", "shard.apply"} {
		if names[n] == 0 {
			t.Errorf("no %s span; got %v", n, names)
		}
	}
}

// The relay's progress rides on the next command entry: recording it under
// load costs no Raft entry of its own. With no command to carry it, it gets
// one.
func TestShard_RelayProgressRidesOnCommandEntries(t *testing.T) {
	r := openReplica(t, t.TempDir(), nil)
	submitAll(t, r.s, 20)
	rows, err := r.s.Outbox(engine.Position{}, 100)
	if err != nil || len(rows) != 20 {
		t.Fatalf("outbox holds %d rows (%v), want 20 events", len(rows), err)
	}
	upTo := rows[len(rows)-1].Pos

	// Under load: commands keep coming while the relay records.
	before := r.s.Status().LastLogIndex
	acked := make(chan error, 1)
	go func() { acked <- r.s.AckRelayed(ctx(t), upTo) }()
	commands := 0
	for done := false; !done; {
		if _, err := r.s.Submit(ctx(t), add("load", commands)); err != nil {
			t.Fatal(err)
		}
		commands++
		select {
		case err := <-acked:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
		}
	}
	if extra := r.s.Status().LastLogIndex - before - uint64(commands); extra != 0 {
		t.Fatalf("%d command entries and %d more for the relay's progress; want none more", commands, extra)
	}
	left, err := r.s.Outbox(engine.Position{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range left {
		if !row.Pos.After(upTo) {
			t.Fatalf("row %v at or before the recorded %v is still in the outbox", row.Pos, upTo)
		}
	}
	if len(left) != commands {
		t.Fatalf("outbox holds %d rows, want the %d events of the commands after the record", len(left), commands)
	}

	// Idle: an entry of its own.
	upTo = left[len(left)-1].Pos
	before = r.s.Status().LastLogIndex
	if err := r.s.AckRelayed(ctx(t), upTo); err != nil {
		t.Fatal(err)
	}
	if n := r.s.Status().LastLogIndex - before; n != 1 {
		t.Fatalf("idle record took %d entries, want 1", n)
	}
	if left, _ := r.s.Outbox(engine.Position{}, 100); len(left) != 0 {
		t.Fatalf("outbox still holds %d rows after recording all", len(left))
	}
}
