package shard

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/storage"
)

// openTestShard is one single-voter shard over real Badger stores in dir.
func openTestShard(t *testing.T, dir string) *Shard {
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
	s, err := Open(Config{
		ID: 3, NodeID: "n1", Registry: builtin.Registry(), StateDB: state, RaftDB: logs,
		Dir: filepath.Join(dir, "shard"), Transport: tr, Bootstrap: true,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		logs.Close()
		state.Close()
	})
	testkit.Eventually(t, 10*time.Second, "a leader", func() (bool, string) {
		return s.IsLeader(), "not the leader"
	})
	return s
}

func counterAdd(id string) actor.Command {
	return actor.Command{ID: id, Type: "cmd.counter.add", IdempotencyKey: id,
		Address: actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: id},
		Payload: []byte(`{"amount":1}`),
		Security: actor.Security{Principal: actor.Principal{ID: "u", Type: actor.PrincipalUser},
			Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}}
}

// A restore that fails after it began replacing keys (here: a value Badger
// refuses, which only the write finds) halts the shard instead of letting it
// apply entries over half a state with the old state's meta and entity
// cache; a restore that succeeds later brings it back. (A follower reaches
// this through InstallSnapshot, which Raft survives; a restore the operator
// asks for makes Raft panic instead, so the FSM is called directly.)
func TestRestoreThatFailsPartWayHaltsUntilARestoreSucceeds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := openTestShard(t, t.TempDir())
	for i := range 20 {
		if _, err := a.Submit(ctx, counterAdd(string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	f := a.Raft().Snapshot()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	_, rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	good, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}

	// Snapshot format v1 (storage/snapshot.go): one entity frame whose
	// 65 MiB value passes the stream's checks but not Badger's value limit.
	var bad bytes.Buffer
	bad.WriteString("RHZNSNAP\x01")
	key := append([]byte{0x02}, counterAdd("huge").Address.Key()...)
	val := make([]byte, 65<<20)
	bad.Write(binary.AppendUvarint(nil, uint64(len(key))))
	bad.Write(binary.AppendUvarint(nil, uint64(len(val))))
	bad.Write(key)
	bad.Write(val)
	bad.Write(binary.AppendUvarint(nil, 0))
	bad.Write(binary.BigEndian.AppendUint64(nil, 1))
	bad.Write(binary.BigEndian.AppendUint32(nil, crc32.Checksum(bad.Bytes(), crc32.MakeTable(crc32.Castagnoli))))

	b := openTestShard(t, t.TempDir())
	if _, err := b.Submit(ctx, counterAdd("only-on-b")); err != nil {
		t.Fatal(err)
	}
	if err := b.fsm.Restore(io.NopCloser(&bad)); err == nil {
		t.Fatal("restore of a snapshot Badger cannot hold succeeded")
	}
	if _, err := b.Submit(ctx, counterAdd("after-bad-restore")); !errors.Is(err, ErrHalted) {
		t.Fatalf("submit after a restore that failed part way: %v, want ErrHalted", err)
	}
	// Health reads the halt from Status; reads refuse it (the state is
	// unknown), linearizable ones too although b still leads.
	if st := b.Status(); !st.Halted || !strings.Contains(st.HaltError, "restore") || st.Role != "Leader" {
		t.Fatalf("status of the halted replica: %+v, want Halted with the restore's error", st)
	}
	if err := b.WaitLinearizable(ctx); !errors.Is(err, ErrHalted) {
		t.Fatalf("linearizable read on the halted replica: %v, want ErrHalted", err)
	}

	// A stream refused before it touched anything leaves the shard running.
	c := openTestShard(t, t.TempDir())
	if err := c.fsm.Restore(io.NopCloser(bytes.NewReader(good[:len(good)-1]))); !errors.Is(err, storage.ErrBadSnapshot) {
		t.Fatalf("restore of a truncated snapshot: %v, want ErrBadSnapshot", err)
	}
	if _, err := c.Submit(ctx, counterAdd("after-refused-restore")); err != nil {
		t.Fatalf("submit after a refused restore: %v", err)
	}

	if err := b.fsm.Restore(io.NopCloser(bytes.NewReader(good))); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Meta().Hash, a.Meta().Hash; got != want {
		t.Fatalf("state hash after the good restore %x, want %x", got, want)
	}
	// (Raft's own indexes did not move, as the FSM was called directly, so
	// a Submit here would prove nothing; the halt is what must be lifted.)
	if b.fsm.halted.Load() || b.Status().Halted || b.Halted() != nil {
		t.Fatal("still halted after a restore that succeeded")
	}
}

// A snapshot lets Raft compact its log behind it, so it must not be recorded
// before the state store is durable: the sync happens in Persist (off the
// apply goroutine), and a failed sync cancels the snapshot.
func TestSnapshotPersistSyncsTheStoreFirst(t *testing.T) {
	s := openTestShard(t, t.TempDir())
	if _, err := s.Submit(context.Background(), counterAdd("c1")); err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	persist := func(sync func() error) error {
		fs, err := s.fsm.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Release()
		snap := fs.(*fsmSnapshot)
		synced := false
		snap.sync = func() error { synced = true; return sync() }
		sink, err := snaps.Create(raft.SnapshotVersionMax, s.Meta().Index, 1, raft.Configuration{}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = fs.Persist(sink)
		if !synced {
			t.Fatal("Persist did not sync the state store")
		}
		return err
	}
	if err := persist(func() error { return errors.New("disk gone") }); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("Persist with a failing sync: %v, want the sync's error", err)
	}
	if list, _ := snaps.List(); len(list) != 0 {
		t.Fatalf("a snapshot whose sync failed was recorded: %+v", list)
	}
	if err := persist(s.fsm.db.Sync); err != nil {
		t.Fatal(err)
	}
	if list, _ := snaps.List(); len(list) != 1 {
		t.Fatalf("snapshots after a good Persist: %d, want 1", len(list))
	}
}
