package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/rhizon/rhizon/cluster/placement"
)

func deployment(typ, rev, owner string, module []byte) *Deployment {
	sum := sha256.Sum256(module)
	return &Deployment{DeployedRevision: DeployedRevision{ActorType: typ, Revision: rev, Owner: owner,
		Hash: hex.EncodeToString(sum[:]), Size: len(module)}, Module: module}
}

// memSink collects a control snapshot.
type memSink struct{ bytes.Buffer }

func (*memSink) ID() string              { return "mem" }
func (*memSink) Cancel() error           { return nil }
func (*memSink) Close() error            { return nil }
func (s *memSink) Reader() io.ReadCloser { return io.NopCloser(bytes.NewReader(s.Bytes())) }

// Deploys are control log entries: the module is stored once per content
// hash, the first deploy of a type fixes its owner, a revision keeps its
// module, and all of it survives a snapshot (what a new or restarted node
// loads from).
func TestControlFSM_DeployStoresModulesOwnedAndSurvivesSnapshots(t *testing.T) {
	f := newControlFSM()
	init := &ClusterState{ClusterID: "c1", Shards: 1, RF: 1, Nodes: []NodeRecord{{ID: "n1"}},
		Placement: []placement.ShardReplicas{{Voters: []string{"n1"}}}}
	init.Initial = cloneReplicas(init.Placement)
	if err := applyOp(t, f, controlOp{Init: init}); err != nil {
		t.Fatal(err)
	}
	m1, m2 := []byte("module one"), []byte("module two")
	if err := applyOp(t, f, controlOp{Deploy: deployment("wc", "1", "acme", m1)}); err != nil {
		t.Fatal(err)
	}
	v := f.State().Version
	if err := applyOp(t, f, controlOp{Deploy: deployment("wc", "1", "acme", m1)}); err != nil || len(f.State().Deployed) != 1 {
		t.Fatalf("the same module again: %v, deployed %v", err, f.State().Deployed)
	}
	refused := map[string]*Deployment{
		"another module as revision 1":  deployment("wc", "1", "acme", m2),
		"another tenant's revision":     deployment("wc", "2", "globex", m2),
		"a system revision of acme's":   deployment("wc", "2", "", m2),
		"no revision":                   deployment("wc", "", "acme", m2),
		"a hash that is not the module": {DeployedRevision: DeployedRevision{ActorType: "wc", Revision: "3", Owner: "acme", Hash: "00"}, Module: m2},
	}
	for name, d := range refused {
		if err := applyOp(t, f, controlOp{Deploy: d}); !errors.Is(err, errControl) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	if err := applyOp(t, f, controlOp{Deploy: deployment("wc", "2", "acme", m2)}); err != nil {
		t.Fatal(err)
	}
	if err := applyOp(t, f, controlOp{Deploy: deployment("alpha", "1", "", m1)}); err != nil {
		t.Fatal(err)
	}
	st := f.State()
	if st.Version <= v || len(st.Deployed) != 3 || len(st.Modules) != 2 {
		t.Fatalf("state: version %d deployed %v modules %d", st.Version, st.Deployed, len(st.Modules))
	}
	if st.Deployed[0].ActorType != "alpha" || st.Deployed[2].Revision != "2" {
		t.Fatalf("deployed not sorted: %v", st.Deployed)
	}

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newControlFSM()
	if err := g.Restore(sink.Reader()); err != nil {
		t.Fatal(err)
	}
	got := g.State()
	if len(got.Deployed) != 3 || !bytes.Equal(got.Modules[got.Deployed[1].Hash], m1) || got.Deployed[1].Owner != "acme" {
		t.Fatalf("restored: %v", got.Deployed)
	}
	if o, ok := deployedOwner(got, "wc"); !ok || o != "acme" {
		t.Fatalf("owner of wc: %q %v", o, ok)
	}
	_ = raft.SnapshotSink(&sink)
}
