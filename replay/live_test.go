package replay_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/replay"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

// openLive runs a real single-voter shard of a cluster of count shards over
// dir and leaves it running.
func openLive(t *testing.T, dir string, count uint32) (*shard.Shard, *storage.RaftDB) {
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
	s, err := shard.Open(shard.Config{
		ID: shardID, NodeID: "n1", Registry: builtin.Registry(), StateDB: state, RaftDB: logs,
		Dir: filepath.Join(dir, "shards", fmt.Sprint(shardID)), Transport: tr, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond, TrailingLogs: 1,
		ShardCount: count,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		logs.Close()
		state.Close()
	})
	testkit.Eventually(t, 10*time.Second, "a leader", func() (bool, string) { return s.IsLeader(), "not the leader" })
	return s, logs
}

// A live shard replays identically up to the position taken at the start,
// although it applied more since; a canceled context stops the replay; a
// log compacted past that position is ErrLogCompacted.
func TestReplay_LiveReplicaUpToItsMetaAtTheStart(t *testing.T) {
	dir := t.TempDir()
	s, logs := openLive(t, dir, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 10 {
		if _, err := s.Submit(ctx, command(fmt.Sprint("c", i%2), "add", fmt.Sprint("k", i), `{"amount":1}`, nil)); err != nil {
			t.Fatal(err)
		}
	}
	at := s.Meta()
	for i := 10; i < 15; i++ {
		if _, err := s.Submit(ctx, command("c0", "add", fmt.Sprint("k", i), `{"amount":1}`, nil)); err != nil {
			t.Fatal(err)
		}
	}
	snapDir := filepath.Join(dir, "shards", fmt.Sprint(shardID))
	opts := replay.Options{Shard: shardID, Registry: builtin.Registry(), At: &at}
	rep, err := replay.ShardContext(ctx, s.Store(), logs.Shard(shardID), snapDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Identical || rep.To != at.Index || rep.Commands != 10 || rep.RecordedHash != fmt.Sprintf("%x", at.Hash) {
		t.Fatalf("live replay to %d: %+v %+v", at.Index, rep, rep.Divergence)
	}
	if s.Meta().Index <= at.Index {
		t.Fatal("the shard applied nothing after the position the replay took")
	}

	stopped, stop := context.WithCancel(ctx)
	stop()
	if _, err := replay.ShardContext(stopped, s.Store(), logs.Shard(shardID), snapDir, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("replay with a canceled context: %v", err)
	}

	// A snapshot past the position compacts the log it needed.
	if err := s.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.ShardContext(ctx, s.Store(), logs.Shard(shardID), snapDir, opts); !errors.Is(err, replay.ErrLogCompacted) {
		t.Fatalf("replay to %d after a snapshot at %d: %v, want ErrLogCompacted", at.Index, s.Meta().Index, err)
	}
}

// The engine places a violation's audit stream by the cluster's shard
// count, which the shard's log does not hold: replayed with another count
// the state hash differs, with the recorded one it is identical. (32: with
// 4, 8 or 16 shards principal u's stream on shard 3 happens to be the
// address a count of 0 gives.)
func TestReplay_ViolationNeedsTheShardCount(t *testing.T) {
	dir := t.TempDir()
	s, logs := openLive(t, dir, 32)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Submit(ctx, command("c0", "add", "k0", `{"amount":1}`, nil)); err != nil {
		t.Fatal(err)
	}
	v := command("c0", "add", "k1", `{"amount":1}`, nil)
	v.Address.Tenant = "someone-else" // outside the principal's scope
	if res, err := s.Submit(ctx, v); err != nil || res.Reason != actor.ReasonViolation {
		t.Fatalf("out-of-scope command: %+v %v", res, err)
	}
	at := s.Meta()
	snapDir := filepath.Join(dir, "shards", fmt.Sprint(shardID))
	for _, count := range []uint32{32, 0, 64} {
		rep, err := replay.ShardContext(ctx, s.Store(), logs.Shard(shardID), snapDir,
			replay.Options{Shard: shardID, Registry: builtin.Registry(), At: &at, ShardCount: count})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Identical != (count == 32) {
			t.Fatalf("replay with shard count %d of a 32-shard record: identical %v, %+v", count, rep.Identical, rep.Divergence)
		}
	}
}
