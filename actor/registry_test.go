package actor_test

import (
	"testing"

	"github.com/rhizon/rhizon/actor"
)

// rev is a versioned behaviour with no logic: the registry only keys it.
type rev struct {
	typ, v string
}

func (r rev) Type() string    { return r.typ }
func (r rev) Version() string { return r.v }
func (r rev) Verbs() []string { return []string{"add"} }
func (r rev) Decide(*actor.Context, []byte, *actor.Command) ([]actor.NewEvent, error) {
	return nil, nil
}
func (r rev) Evolve(s []byte, _ *actor.Event) ([]byte, error) { return s, nil }

// A type deployed at run time has no base revision (an entry naming no
// revision of it is refused alike everywhere), keeps the owner of its first
// deploy, and is usable by that tenant only.
func TestRegistry_AddDeployedHasNoBaseAndAnOwner(t *testing.T) {
	reg, err := actor.NewRegistry(rev{"static", "1"})
	if err != nil {
		t.Fatal(err)
	}
	types := reg.Types()
	if err := reg.AddDeployed(rev{"wc", "1"}, "acme"); err != nil {
		t.Fatal(err)
	}
	if len(types) != 1 {
		t.Fatalf("a Types slice handed out earlier changed: %v", types)
	}
	if _, ok := reg.Lookup("wc"); ok {
		t.Fatal("a deployed type has a base revision")
	}
	if _, ok := reg.LookupRevision("wc", ""); ok {
		t.Fatal("an entry naming no revision of a deployed type finds one")
	}
	if b, ok := reg.LookupRevision("wc", "1"); !ok || actor.Revision(b) != "1" {
		t.Fatalf("revision 1: %v %v", b, ok)
	}
	if !reg.Known("wc") || reg.Known("nope") {
		t.Fatal("Known")
	}
	if err := reg.AddDeployed(rev{"wc", "2"}, "globex"); err == nil {
		t.Fatal("another tenant's revision of acme's type was added")
	}
	if err := reg.AddDeployed(rev{"wc", "2"}, "acme"); err != nil {
		t.Fatal(err)
	}
	if got := reg.Revisions("wc"); len(got) != 2 {
		t.Fatalf("revisions %v", got)
	}
	if !reg.Usable("wc", "acme") || reg.Usable("wc", "globex") || !reg.Usable("static", "globex") {
		t.Fatal("Usable")
	}
	// A revision deployed by the system for a type loaded at start keeps
	// its base revision and stays every tenant's.
	if err := reg.AddDeployed(rev{"static", "2"}, ""); err != nil {
		t.Fatal(err)
	}
	if b, ok := reg.Lookup("static"); !ok || actor.Revision(b) != "1" || !reg.Usable("static", "anyone") {
		t.Fatalf("static base: %v %v", b, ok)
	}
}
