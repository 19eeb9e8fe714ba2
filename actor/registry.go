package actor

import (
	"fmt"
	"slices"
)

// Registry maps actor type names to behaviours. Build it before the node
// starts; it is read-only afterwards and safe for concurrent readers.
type Registry struct {
	byType map[string]Behavior
	types  []string
}

// NewRegistry returns a registry holding bs.
func NewRegistry(bs ...Behavior) (*Registry, error) {
	r := &Registry{byType: map[string]Behavior{}}
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
	r.byType[b.Type()] = b
	r.types = append(r.types, b.Type())
	slices.Sort(r.types)
	return nil
}

// Lookup returns the behaviour of actorType.
func (r *Registry) Lookup(actorType string) (Behavior, bool) {
	b, ok := r.byType[actorType]
	return b, ok
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string { return r.types }
