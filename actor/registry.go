package actor

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rhizon/rhizon/internal/rwlock"
)

// Registry maps actor type names to behaviours. Build it before the node
// starts; afterwards only AddDeployed changes it (a revision deployed at run
// time, loaded from the control log). It is safe for concurrent use.
//
// A type can hold several code revisions (AddRevision): the log records
// which revision decided each entry, so a node keeps the old logic to apply
// and replay entries of the old revision while new commands run the new one.
// The first behaviour registered for a type is its base revision: the one
// entries recorded before revisions existed were decided with.
type Registry struct {
	// mu guards run-time additions (AddDeployed). An interface, filled by
	// NewRegistry from internal/rwlock, so that this package, which the
	// determinism check keeps free of sync, does not import it.
	mu     rwLocker
	byType map[string]Behavior
	// deployed are the types that exist only through AddDeployed: they have
	// no base revision, so an entry that names no revision of them (it was
	// proposed before the type was activated) is refused as an unknown
	// type on every replica, whether or not it loaded the module yet.
	deployed map[string]bool
	// owners holds the owning tenant of deployed types ("" for every tenant).
	owners map[string]string
	// revs holds every revision of each type, base first.
	revs  map[string][]Behavior
	types []string
}

// rwLocker is what *sync.RWMutex provides.
type rwLocker interface {
	Lock()
	Unlock()
	RLock()
	RUnlock()
}

func (r *Registry) lock() {
	if r.mu != nil {
		r.mu.Lock()
	}
}

func (r *Registry) unlock() {
	if r.mu != nil {
		r.mu.Unlock()
	}
}

func (r *Registry) rlock() {
	if r.mu != nil {
		r.mu.RLock()
	}
}

func (r *Registry) runlock() {
	if r.mu != nil {
		r.mu.RUnlock()
	}
}

// NewRegistry returns a registry holding bs.
func NewRegistry(bs ...Behavior) (*Registry, error) {
	r := &Registry{byType: map[string]Behavior{}, revs: map[string][]Behavior{}, mu: rwlock.New()}
	for _, b := range bs {
		if err := r.Register(b); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds b. Registering a type twice is an error.
func (r *Registry) Register(b Behavior) error {
	r.lock()
	defer r.unlock()
	return r.register(b)
}

func (r *Registry) register(b Behavior) error {
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
	// A new slice: Types' callers may hold the old one.
	types := append(slices.Clone(r.types), b.Type())
	slices.Sort(types)
	r.types = types
	return nil
}

// AddRevision adds another code revision of a type: the first one of a
// type becomes its base (as Register), later ones are kept beside it for
// the entries that name them. b must be Versioned with a revision that is
// not empty, has no comma, and is not registered yet.
func (r *Registry) AddRevision(b Behavior) error {
	r.lock()
	defer r.unlock()
	return r.addRevision(b)
}

func (r *Registry) addRevision(b Behavior) error {
	rev := Revision(b)
	if rev == "" || strings.ContainsAny(rev, ", ") {
		return fmt.Errorf("actor: type %q: revision %q must be set and hold no comma or space", b.Type(), rev)
	}
	if _, ok := r.byType[b.Type()]; !ok {
		return r.register(b)
	}
	if _, dup := r.lookupRevision(b.Type(), rev); dup {
		return fmt.Errorf("actor: type %q revision %q registered twice", b.Type(), rev)
	}
	r.revs[b.Type()] = append(slices.Clone(r.revs[b.Type()]), b)
	return nil
}

// AddDeployed adds a revision deployed at run time (rhizon actor deploy),
// owned by tenant owner ("" for every tenant). A type first added this way
// has no base revision: Lookup and LookupRevision(t, "") miss it, so only
// entries stamped with one of its revisions (after rhizon actor activate)
// run it. A type registered at start keeps its base and its owner "".
func (r *Registry) AddDeployed(b Behavior, owner string) error {
	if r.mu == nil {
		return fmt.Errorf("actor: type %q: only a registry made by NewRegistry takes run-time revisions", b.Type())
	}
	r.lock()
	defer r.unlock()
	_, existed := r.byType[b.Type()]
	if existed && r.owners[b.Type()] != owner {
		return fmt.Errorf("actor: type %q belongs to tenant %q, not %q", b.Type(), r.owners[b.Type()], owner)
	}
	if err := r.addRevision(b); err != nil {
		return err
	}
	if !existed {
		if r.deployed == nil {
			r.deployed, r.owners = map[string]bool{}, map[string]string{}
		}
		r.deployed[b.Type()] = true
		r.owners[b.Type()] = owner
	}
	return nil
}

// Known reports whether actorType has any revision here (deployed ones
// included).
func (r *Registry) Known(actorType string) bool {
	r.rlock()
	defer r.runlock()
	_, ok := r.byType[actorType]
	return ok
}

// Owner returns the tenant owning actorType, or "" when every tenant may
// use it (built-in, loaded at start, or deployed by the system).
func (r *Registry) Owner(actorType string) string {
	r.rlock()
	defer r.runlock()
	return r.owners[actorType]
}

// Usable reports whether tenant may send commands to actorType: it is not
// owned by another tenant. Every replica answers the same, since owners
// come from the control log.
func (r *Registry) Usable(actorType, tenant string) bool {
	o := r.Owner(actorType)
	return o == "" || o == tenant
}

// Lookup returns the behaviour of actorType: its base revision.
func (r *Registry) Lookup(actorType string) (Behavior, bool) {
	r.rlock()
	defer r.runlock()
	return r.lookup(actorType)
}

func (r *Registry) lookup(actorType string) (Behavior, bool) {
	if r.deployed[actorType] {
		return nil, false
	}
	b, ok := r.byType[actorType]
	return b, ok
}

// LookupRevision returns revision rev of actorType; "" is the base revision.
func (r *Registry) LookupRevision(actorType, rev string) (Behavior, bool) {
	r.rlock()
	defer r.runlock()
	return r.lookupRevision(actorType, rev)
}

func (r *Registry) lookupRevision(actorType, rev string) (Behavior, bool) {
	if rev == "" {
		return r.lookup(actorType)
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
	r.rlock()
	defer r.runlock()
	var out []string
	for _, b := range r.revs[actorType] {
		out = append(out, Revision(b))
	}
	return out
}

// Types returns the registered type names, sorted.
func (r *Registry) Types() []string {
	r.rlock()
	defer r.runlock()
	return r.types
}

// Revision is b's code version (Versioned), or "" when it has none.
func Revision(b Behavior) string {
	if v, ok := b.(Versioned); ok {
		return v.Version()
	}
	return ""
}
