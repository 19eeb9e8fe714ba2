package cluster

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/cluster/membership"
	"github.com/rhizon/rhizon/cluster/placement"
)

func TestControlFSM_ActivateSetsTheRevisionAndSurvivesSnapshots(t *testing.T) {
	f := newControlFSM()
	init := &ClusterState{ClusterID: "c1", Shards: 1, RF: 1, Nodes: []NodeRecord{{ID: "n1"}},
		Placement: []placement.ShardReplicas{{Voters: []string{"n1"}}}}
	init.Initial = cloneReplicas(init.Placement)
	if err := applyOp(t, f, controlOp{Init: init}); err != nil {
		t.Fatal(err)
	}
	if err := applyOp(t, f, controlOp{Activate: &Activation{ActorType: "ticket"}}); !errors.Is(err, errControl) {
		t.Fatalf("activate without a revision: %v", err)
	}
	if err := applyOp(t, f, controlOp{Activate: &Activation{ActorType: "ticket", Revision: "2"}}); err != nil {
		t.Fatal(err)
	}
	before := f.State()
	if err := applyOp(t, f, controlOp{Activate: &Activation{ActorType: "ticket", Revision: "1"}}); err != nil {
		t.Fatal(err)
	}
	if before.Revisions["ticket"] != "2" {
		t.Fatalf("an earlier state changed: %v", before.Revisions)
	}
	if got := f.State().Revisions["ticket"]; got != "1" {
		t.Fatalf("after rolling back: %q", got)
	}
}

func member(id string, alive bool, actors map[string]string) membership.Member {
	st := membership.MemberAlive
	if !alive {
		st = membership.MemberDead
	}
	return membership.Member{Meta: membership.NodeMeta{ID: id, Actors: actors}, State: st}
}

func TestNodesLacking_NamesNodesWithoutTheRevisionOrUnknown(t *testing.T) {
	st := &ClusterState{Shards: 2, Placement: []placement.ShardReplicas{
		{Voters: []string{"n1", "n2"}}, {Voters: []string{"n2"}, Learners: []string{"n3"}}}}
	members := []membership.Member{
		member("n1", true, map[string]string{"ticket": "1,2"}),
		member("n2", true, map[string]string{"ticket": "1"}),
		member("n3", false, map[string]string{"ticket": "1,2"}),
		member("n4", true, map[string]string{}), // holds no replica: not asked
	}
	got := nodesLacking(st, members, "ticket", "2")
	want := []string{"n2 (has 1)", "n3 (not alive: its revisions are unknown)"}
	if !slices.Equal(got, want) {
		t.Fatalf("lacking %q, want %q", got, want)
	}
	if got := nodesLacking(st, members[:2], "ticket", "1"); !slices.Equal(got, []string{"n3 (not alive: its revisions are unknown)"}) {
		t.Fatalf("lacking revision 1: %q", got)
	}
	st.Revisions = map[string]string{"ticket": "2"}
	if !lacksActive(st, members[1].Meta) || lacksActive(st, members[0].Meta) {
		t.Fatal("lacksActive: n2 lacks ticket 2, n1 has it")
	}
}

// A document type's indexes are joined with ';' in the version a node
// gossips (its revisions are comma-separated); a node from before that
// joined them with commas declares the same thing.
func TestDocTypes_OldCommaFormIsTheSameDeclaration(t *testing.T) {
	members := []membership.Member{member("old", true, map[string]string{"user": "2/doc:age,email", "counter": "2"})}
	if got := docTypeMismatches("new", map[string]string{"user": "2/doc:age;email", "counter": "2"}, members); len(got) != 0 {
		t.Fatalf("mismatches %q, want none", got)
	}
	got := docTypeMismatches("new", map[string]string{"user": "2/doc:age"}, members)
	if len(got) != 1 || !strings.Contains(got[0], "user is indexed on age,email there, indexed on age here") {
		t.Fatalf("mismatches %q", got)
	}
}
