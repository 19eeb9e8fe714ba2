package replay_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/replay"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

const shardID = 3

// record runs a real single-voter shard (Raft, Badger, the node's directory
// layout) over dir, submits commands (accepted, conflicting and rejected
// ones), optionally snapshots with the log compacted, and stops it. It
// returns the shard's applied meta at the end.
func record(t *testing.T, dir string, compact bool) { recordChecked(t, dir, compact, 0) }

// recordChecked is record with the leader's state check every checkEvery
// applied entries (0: the shard's default).
func recordChecked(t *testing.T, dir string, compact bool, checkEvery int) {
	t.Helper()
	state, err := storage.Open(filepath.Join(dir, "state"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := storage.OpenRaft(filepath.Join(dir, "raft"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, tr := raft.NewInmemTransport("")
	cfg := shard.Config{
		ID: shardID, NodeID: "n1", Registry: builtin.Registry(), StateDB: state, RaftDB: logs,
		Dir: filepath.Join(dir, "shards", fmt.Sprint(shardID)), Transport: tr, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond,
		HashCheckEvery: checkEvery,
	}
	if compact {
		cfg.TrailingLogs = 1 // a snapshot compacts (nearly) the whole log
	}
	s, err := shard.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = s.Close()
		logs.Close()
		state.Close()
	}()
	testkit.Eventually(t, 10*time.Second, "a leader", func() (bool, string) { return s.IsLeader(), "not the leader" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	submit := func(c actor.Command) {
		t.Helper()
		if _, err := s.Submit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	batch := func(from int) {
		for i := range 12 {
			n := from + i
			submit(command(fmt.Sprint("c", n%3), "add", fmt.Sprint("k", n), fmt.Sprintf(`{"amount":%d}`, n+1), nil))
		}
		stale := uint64(1)
		submit(command("c0", "add", fmt.Sprint("stale", from), `{"amount":1}`, &stale)) // a conflict
		submit(command("c1", "add", fmt.Sprint("bad", from), `{"amount":"x"}`, nil))    // invalid
	}
	batch(0)
	if compact {
		if err := s.Raft().Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	batch(100)
}

func command(entity, verb, key, payload string, expected *uint64) actor.Command {
	return actor.Command{ID: "id-" + key, Type: actor.CommandType("counter", verb), IdempotencyKey: key,
		Address: actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: entity},
		Payload: []byte(payload), ExpectedVersion: expected,
		Security: actor.Security{Principal: actor.Principal{ID: "u", Type: actor.PrincipalUser},
			Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}}
}

// The same binary replays its own record identically, from an empty store
// and from a snapshot behind a compacted log.
func TestReplay_SameCodeIsIdentical(t *testing.T) {
	for _, compact := range []bool{false, true} {
		t.Run(fmt.Sprint("compacted=", compact), func(t *testing.T) {
			dir := t.TempDir()
			record(t, dir, compact)
			rep, err := replay.DataDir(dir, replay.Options{Shard: shardID, Registry: builtin.Registry()})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Identical || rep.Divergence != nil {
				t.Fatalf("replay of the recording binary's own log: %+v %+v", rep, rep.Divergence)
			}
			if rep.RecordedHash != rep.ReplayedHash || strings.Trim(rep.RecordedHash, "0") == "" {
				t.Fatalf("hashes: recorded %s replayed %s", rep.RecordedHash, rep.ReplayedHash)
			}
			if compact {
				if rep.Snapshot == 0 || rep.Commands != 14 {
					t.Fatalf("compacted: replayed %d commands from snapshot %d; want the 14 after it", rep.Commands, rep.Snapshot)
				}
			} else if rep.Snapshot != 0 || rep.Commands != 28 || rep.Compared != 28 {
				t.Fatalf("replayed %d commands (%d compared) from snapshot %d; want all 28 from the start", rep.Commands, rep.Compared, rep.Snapshot)
			}
		})
	}
}

// doubling is the counter whose Decide changed in a new build: it adds
// twice the amount. A replay with it must name the first command whose
// result differs, with both results.
type doubling struct{ actor.Behavior }

func (d doubling) Decide(ctx *actor.Context, state []byte, c *actor.Command) ([]actor.NewEvent, error) {
	if c.Address.EntityID == "c2" && strings.Contains(string(c.Payload), `"amount":3`) {
		c2 := *c
		c2.Payload = []byte(`{"amount":6}`)
		return d.Behavior.Decide(ctx, state, &c2)
	}
	return d.Behavior.Decide(ctx, state, c)
}

func TestReplay_ChangedDecideIsTheFirstDivergence(t *testing.T) {
	dir := t.TempDir()
	record(t, dir, false)
	var bs []actor.Behavior
	for _, b := range builtin.All() {
		if b.Type() == "counter" {
			b = doubling{b}
		}
		bs = append(bs, b)
	}
	reg, err := actor.NewRegistry(bs...)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replay.DataDir(dir, replay.Options{Shard: shardID, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	d := rep.Divergence
	if rep.Identical || d == nil {
		t.Fatalf("a changed Decide replayed identically: %+v", rep)
	}
	// The third command (key k2, amount 3, entity c2) is the first the
	// changed code decides differently.
	if d.CommandID != "id-k2" || d.What != "result" || !strings.Contains(d.Address, "c2") ||
		!strings.Contains(d.Recorded, `"amount":3`) || !strings.Contains(d.Replayed, `"amount":6`) {
		t.Fatalf("divergence: %+v", d)
	}
	if rep.RecordedHash == rep.ReplayedHash {
		t.Fatal("the state hashes agree after a divergence")
	}

	// Scoped to another entity, the commands compared agree; the shard's
	// hash still tells.
	other := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "c0"}
	rep, err = replay.DataDir(dir, replay.Options{Shard: shardID, Registry: reg, Entity: &other})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Identical || rep.Divergence == nil || rep.Divergence.What != "state hash" || rep.Compared != 10 {
		t.Fatalf("scoped to c0: %+v %+v", rep, rep.Divergence)
	}
}

// evolvedExtra is the counter whose Evolve changed in a new build and whose
// Decide did not: it writes a field nobody reads into the state of value 1.
// Decide decodes the same value from it, so every result and event stays
// as recorded; only the state (and its hash) differs, from that entry on.
type evolvedExtra struct{ actor.Behavior }

func (e evolvedExtra) Evolve(state []byte, ev *actor.Event) ([]byte, error) {
	next, err := e.Behavior.Evolve(state, ev)
	if err == nil && string(next) == `{"value":1}` {
		return []byte(`{"value":1,"evolved":2}`), nil
	}
	return next, err
}

// A divergence only in state is located at the first leader state check
// that differs (the entry where c0 first reached value 1), not at the end.
func TestReplay_ChangedEvolveIsLocatedAtTheFirstDifferingStateCheck(t *testing.T) {
	dir := t.TempDir()
	recordChecked(t, dir, false, 1) // every entry checks the one before
	// Where the changed Evolve first writes a different state: c0's first
	// command (key k0, amount 1).
	state, err := storage.Open(filepath.Join(dir, "state"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, ok, err := state.Shard(shardID).Result(actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "c0"}, "k0")
	state.Close()
	if err != nil || !ok {
		t.Fatalf("result of k0: %v %v", ok, err)
	}
	var res recordv1.Result
	if err := proto.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	at := res.ToActor().Index

	var bs []actor.Behavior
	for _, b := range builtin.All() {
		if b.Type() == "counter" {
			b = evolvedExtra{b}
		}
		bs = append(bs, b)
	}
	reg, err := actor.NewRegistry(bs...)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replay.DataDir(dir, replay.Options{Shard: shardID, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	d := rep.Divergence
	if rep.Identical || d == nil || d.What != "state hash" || d.CommandID != "" {
		t.Fatalf("a changed Evolve: %+v %+v", rep, d)
	}
	if d.Index != at || d.Index >= rep.To || !strings.Contains(d.Recorded, "state check in entry") {
		t.Fatalf("divergence at %d (%s), want the state check of index %d where c0's state first differs (the log ends at %d)",
			d.Index, d.Recorded, at, rep.To)
	}
	if rep.RecordedHash == rep.ReplayedHash {
		t.Fatalf("hashes agree at the end: %s", rep.RecordedHash)
	}
}

func TestReplay_NoSuchShard(t *testing.T) {
	dir := t.TempDir()
	record(t, dir, false)
	if _, err := replay.DataDir(dir, replay.Options{Shard: shardID + 1, Registry: builtin.Registry()}); err == nil ||
		!strings.Contains(err.Error(), "no recorded state") {
		t.Fatalf("a shard this node never held: %v", err)
	}
}
