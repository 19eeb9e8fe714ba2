package engine_test

import (
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/upgradetest"
	"github.com/rhizon/rhizon/engine"
)

// deployedRegistry holds upgrade@1 as a type deployed at run time by tenant
// owner (rhizon actor deploy), as a node loads it from the control log.
func deployedRegistry(t *testing.T, owner string) *actor.Registry {
	t.Helper()
	b, ok := upgradeRegistry(t, "upgrade@1").LookupRevision(upgradetest.Type, "1")
	if !ok {
		t.Fatal("no upgrade@1")
	}
	reg, err := actor.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.AddDeployed(b, owner); err != nil {
		t.Fatal(err)
	}
	return reg
}

// A deployed type is decided only by entries that name its revision (those
// after rhizon actor activate) and only for its owner's commands: an entry
// without its revision, or another tenant's command, is refused as an
// unknown type, identically on every replica, whatever the gateway let
// through.
func TestEngine_DeployedTypeServesItsOwnerOnceActivated(t *testing.T) {
	r1 := newReplica(t, deployedRegistry(t, "a")) // addr() is tenant "a"
	r2 := newMemReplica(t, deployedRegistry(t, "a"))
	other := actor.Address{Tenant: "b", Workspace: "w", ActorType: upgradetest.Type, EntityID: "e1"}
	otherCmd := cmd(other, "add", "k3", map[string]int{"amount": 5})
	otherCmd.Security = actor.Security{Principal: userA.Principal, Scopes: []actor.Scope{{Tenant: "b", Workspace: "*"}}}
	rev := map[string]string{upgradetest.Type: "1"}
	log := []engine.Entry{
		{Index: 1, At: 100, Commands: []actor.Command{cmd(addr(upgradetest.Type, "e1"), "add", "k1", map[string]int{"amount": 5})}},
		{Index: 2, At: 101, Commands: []actor.Command{cmd(addr(upgradetest.Type, "e1"), "add", "k2", map[string]int{"amount": 5})}, Revisions: rev},
		{Index: 3, At: 102, Commands: []actor.Command{otherCmd}, Revisions: rev},
	}
	var got [][]actor.Result
	for _, ent := range log {
		got = append(got, r1.apply(ent))
		r2.apply(ent)
	}
	if res := got[0][0]; res.Status != actor.StatusRejected || res.Code != actor.CodeInvalid {
		t.Fatalf("entry without the deployed type's revision: %+v, want rejected as invalid", res)
	}
	if a := addedBy(t, got[1][0]); a.By != "1" {
		t.Fatalf("owner's command decided by %q", a.By)
	}
	if res := got[2][0]; res.Status != actor.StatusRejected || res.Code != actor.CodeInvalid || res.Message != `unknown actor type "upgrade"` {
		t.Fatalf("another tenant's command: %+v, want rejected as an unknown type", res)
	}
	if r1.eng.Meta() != r2.eng.Meta() {
		t.Fatalf("replicas differ: %+v vs %+v", r1.eng.Meta(), r2.eng.Meta())
	}
}
