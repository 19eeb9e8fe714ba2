package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/placement"
)

func applyOp(t *testing.T, f *controlFSM, op controlOp) error {
	t.Helper()
	b, err := json.Marshal(op)
	if err != nil {
		t.Fatal(err)
	}
	res := f.Apply(&raft.Log{Type: raft.LogCommand, Data: b})
	if res == nil {
		return nil
	}
	return res.(error)
}

func TestControlFSM_InitMovesAndRefusals(t *testing.T) {
	f := newControlFSM()
	if err := applyOp(t, f, controlOp{Node: &NodeRecord{ID: "n1"}}); !errors.Is(err, errControl) {
		t.Fatalf("node op before init: %v", err)
	}
	init := &ClusterState{ClusterID: "c1", Shards: 2, RF: 2,
		Nodes:     []NodeRecord{{ID: "n2"}, {ID: "n1"}},
		Placement: []placement.ShardReplicas{{Voters: []string{"n1", "n2"}}, {Voters: []string{"n1", "n2"}}}}
	init.Initial = cloneReplicas(init.Placement)
	if err := applyOp(t, f, controlOp{Init: init}); err != nil {
		t.Fatal(err)
	}
	if err := applyOp(t, f, controlOp{Init: init}); !errors.Is(err, errControl) {
		t.Fatalf("second init: %v", err)
	}
	st := f.State()
	if st.Version != 1 || st.Nodes[0].ID != "n1" {
		t.Fatalf("after init: %+v", st)
	}
	if voters, ok := st.Bootstraps(0, "n1"); !ok || len(voters) != 2 {
		t.Fatalf("n1 should bootstrap shard 0: %v %v", voters, ok)
	}
	steps := []placement.Move{{Shard: 0, Kind: placement.AddLearner, Node: "n3"}, {Shard: 0, Kind: placement.Promote, Node: "n3"}, {Shard: 0, Kind: placement.RemoveVoter, Node: "n1"}}
	for _, m := range steps {
		if err := applyOp(t, f, controlOp{Move: &m}); err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
	}
	st = f.State()
	if got := st.Placement[0].Voters; len(got) != 2 || got[0] != "n2" || got[1] != "n3" || len(st.Placement[0].Learners) != 0 {
		t.Fatalf("shard 0 after the move: %+v", st.Placement[0])
	}
	if _, ok := st.Bootstraps(0, "n2"); ok {
		t.Fatal("a moved shard must not bootstrap again")
	}
	if st.Hosts(0, "n1") || !st.Hosts(1, "n1") {
		t.Fatal("hosts after the move")
	}
	for _, bad := range []placement.Move{
		{Shard: 0, Kind: placement.AddLearner, Node: "n2"},  // already a voter
		{Shard: 0, Kind: placement.Promote, Node: "n9"},     // not a learner
		{Shard: 0, Kind: placement.RemoveVoter, Node: "n9"}, // holds nothing
		{Shard: 7, Kind: placement.AddLearner, Node: "n1"},  // no such shard
	} {
		if err := applyOp(t, f, controlOp{Move: &bad}); !errors.Is(err, errControl) {
			t.Errorf("%+v accepted: %v", bad, err)
		}
	}
	one := &ClusterState{ClusterID: "c", Shards: 1, RF: 1, Placement: []placement.ShardReplicas{{Voters: []string{"n1"}}}}
	g := newControlFSM()
	_ = applyOp(t, g, controlOp{Init: one})
	if err := applyOp(t, g, controlOp{Move: &placement.Move{Shard: 0, Kind: placement.RemoveVoter, Node: "n1"}}); !errors.Is(err, errControl) {
		t.Fatalf("removing the last voter: %v", err)
	}
	// Snapshot and restore round-trip.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(snap.(controlSnapshot))
	h := newControlFSM()
	if err := h.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(h.State()); string(got) != string(b) {
		t.Fatalf("restored state differs:\n%s\n%s", got, b)
	}
}

func TestControlFSM_LeaderHints(t *testing.T) {
	f := newControlFSM()
	init := &ClusterState{ClusterID: "c", Shards: 2, RF: 1, Placement: []placement.ShardReplicas{{Voters: []string{"n1"}}, {Voters: []string{"n2"}}}}
	if err := applyOp(t, f, controlOp{Init: init}); err != nil {
		t.Fatal(err)
	}
	if err := applyOp(t, f, controlOp{Leaders: []string{"n1"}}); !errors.Is(err, errControl) {
		t.Fatalf("hints for the wrong shard count: %v", err)
	}
	if err := applyOp(t, f, controlOp{Leaders: []string{"n1", "n2"}}); err != nil {
		t.Fatal(err)
	}
	if st := f.State(); st.LeaderHint(1) != "n2" || st.LeaderHint(7) != "" {
		t.Fatalf("hints: %v", st.Leaders)
	}
}
