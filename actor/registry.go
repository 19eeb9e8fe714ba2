package actor

import (
	"fmt"
	"slices"
	"strings"
)

// Registry maps actor type names to behaviours. Build it before the node
// starts; it is read-only afterwards and safe for concurrent readers.
//
// A type can hold several code revisions (AddRevision): the log records
// which revision decided each entry, so a node keeps the old logic to apply
// and replay entries of the old revision while new commands run the new one.
// The first behaviour registered for a type is its base revision: the one
// entries recorded before revisions existed were decided with.
type Registry struct {
	byType map[string]Behavior
	// revs holds every revision of each type, base first.
	revs  map[string][]Behavior
	types []string
}

// NewRegistry returns a registry holding bs.
func NewRegistry(bs ...Behavior) (*Registry, error) {
	r := &Registry{byType: map[string]Behavior{}, revs: map[string][]Behavior{}}
	for _, b := range bs {
		if err := r.Register(b); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds b. Registering a type twice is an error.
func (r *Registry) Register(b Behavior) error {
	if err := ValidateID("actor type", b.Type()); err != nil {
		return err
	}
	if _, dup := r.byType[b.Type()]; dup {
		return fmt.Errorf("actor: type %q registered twice", b.Type())
	}
	if r.revs == nil {
		r.revs = map[string][]Behavior{}
	}
	r.byType[b.Type()] = b
	r.revs[b.Type()] = []Behavior{b}
	r.types = append(r.types, b.Type())
	slices.Sort(r.types)
	return nil
}

// AddRevision adds another code revision of a type: the first one of a
// type becomes its base (as Register), later ones are kept beside it for
// the entries that name them. b must be Versioned with a revision that is
// not empty, has no comma, and is not registered yet.
func (r *Registry) AddRevision(b Behavior) error {
	rev := Revision(b)
	if rev == "" || strings.ContainsAny(rev, ", ") {
		return fmt.Errorf("actor: type %q: revision %q must be set and hold no comma or space", b.Type(), rev)
	}
	if _, ok := r.byType[b.Type()]; !ok {
		return r.Register(b)
	}
	if _, dup := r.LookupRevision(b.Type(), rev); dup {
		return fmt.Errorf("actor: type %q revision %q registered twice", b.Type(), rev)
	}
	r.revs[b.Type()] = append(r.revs[b.Type()], b)
	return nil
}

// Lookup returns the behaviour of actorType: its base revision.
func (r *Registry) Lookup(actorType string) (Behavior, bool) {
	b, ok := r.byType[actorType]
	return b, ok
}

// LookupRevision returns revision rev of actorType; "" is the base revision.
func (r *Registry) LookupRevision(actorType, rev string) (Behavior, bool) {
	if rev == "" {
		return r.Lookup(actorType)
	}
	for _, b := range r.revs[actorType] {
		if Revision(b) == rev {
			return b, true
		}
	}
	return nil, false
}

// Revisions returns the revisions of actorType this registry holds, base
// first; a base without a version is "".
func (r *Registry) Revisions(actorType string) []string {
	var out []string
	for _, b := range r.revs[actorType] {
		out = append(out, Revision(b))
	}
	return out
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string { return r.types }

// Revision is b's code version (Versioned), or "" when it has none.
func Revision(b Behavior) string {
	if v, ok := b.(Versioned); ok {
		return v.Version()
	}
	return ""
}
