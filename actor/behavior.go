package actor

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
)

// Behavior is what an actor type implements. The engine calls it on one
// goroutine per shard; implementations must be deterministic and must not
// keep state outside the bytes they are given.
type Behavior interface {
	// Type is the actor type name, as in the address and "cmd.<type>.<verb>".
	Type() string
	// Verbs lists the command verbs Decide accepts, sorted. The gateway rejects
	// any other verb with InvalidArgument before it reaches the log.
	Verbs() []string
	// Decide checks cmd against the current state (nil for a new entity) and
	// returns the events to record, or a *Rejection. Any other error is treated
	// as a business rejection with code "error".
	Decide(ctx *Context, state []byte, cmd *Command) ([]NewEvent, error)
	// Evolve returns the state after ev. It must accept every event Decide
	// emits. An error (or a panic, or a state over MaxStateBytes) rejects the
	// command with code "evolve_failed" and records none of its events; it
	// is a function of the entry, so every replica rejects it alike.
	Evolve(state []byte, ev *Event) ([]byte, error)
}

// Validator is an optional Behavior capability: a stateless, deterministic
// check of a command's payload, run at the gateway (so malformed input is
// refused before it reaches the log) and again in the engine.
type Validator interface {
	Validate(cmd *Command) error
}

// Upcaster is an optional Behavior capability: it turns an event recorded
// with an older payload schema into the current one. History, Watch and the
// JSON events apply it to what they show, over and over until it answers
// the version it was given; the stored event is never rewritten, so replicas,
// replays and state hashes do not depend on it. It must be deterministic
// and pure (the same input always gives the same output), and should leave
// events it does not know unchanged: return eventType, schemaVersion and
// payload as given. schemaVersion is at least 1.
type Upcaster interface {
	Upcast(eventType string, schemaVersion uint32, payload []byte) (string, uint32, []byte, error)
}

// MaxUpcastSteps bounds the chain of upcasts applied to one event: an
// upcaster that keeps answering a new version is a bug, not a long chain.
const MaxUpcastSteps = 32

// UpcastEvent applies b's Upcaster, if it has one, to ev until the schema
// version stops changing, and returns the upcast copy (ev itself is not
// modified). The result's SchemaVersion is always set (at least 1), since it
// is shown, not stored.
func UpcastEvent(b Behavior, ev Event) (Event, error) {
	ev.SchemaVersion = ev.Schema()
	u, ok := b.(Upcaster)
	if !ok {
		return ev, nil
	}
	for range MaxUpcastSteps {
		typ, v, payload, err := u.Upcast(ev.Type, ev.SchemaVersion, ev.Payload)
		if err != nil {
			return ev, fmt.Errorf("upcast %s v%d of %s: %w", ev.Type, ev.SchemaVersion, ev.Address, err)
		}
		v = max(v, 1)
		if v == ev.SchemaVersion && typ == ev.Type {
			ev.Payload = payload
			return ev, nil
		}
		if v < ev.SchemaVersion {
			return ev, fmt.Errorf("upcast %s v%d of %s answered v%d: an upcaster may only raise the version", ev.Type, ev.SchemaVersion, ev.Address, v)
		}
		ev.Type, ev.SchemaVersion, ev.Payload = typ, v, payload
	}
	return ev, fmt.Errorf("upcast %s of %s: still changing after %d steps", ev.Type, ev.Address, MaxUpcastSteps)
}

// Versioned is an optional Behavior capability naming the code version of the
// actor type (reported in node metadata).
type Versioned interface {
	Version() string
}

// Handler decides one verb for a typed actor.
type Handler[S any] func(ctx *Context, s *S, cmd *Command) ([]NewEvent, error)

// Definition builds a Behavior from typed handlers. The state is encoded as
// JSON (encoding/json sorts map keys, so the encoding is deterministic).
type Definition[S any] struct {
	Name     string
	Revision string
	// Commands maps a verb to its handler.
	Commands map[string]Handler[S]
	// Validate optionally checks a payload without state (see Validator).
	Validate func(cmd *Command) error
	// Apply folds one event into the state.
	Apply func(s *S, ev *Event) error
	// EncodeState and DecodeState optionally replace json.Marshal and
	// json.Unmarshal of the state (a hand-written codec for a hot type).
	// They must give what encoding/json gives for every state: the encoded
	// bytes are stored and hashed, so replicas, replays and older stores
	// depend on them.
	EncodeState func(s *S) ([]byte, error)
	DecodeState func(state []byte, s *S) error
	// Upcast optionally turns older event schemas into current ones (see
	// Upcaster).
	Upcast func(eventType string, schemaVersion uint32, payload []byte) (string, uint32, []byte, error)
}

// Define turns d into a Behavior.
// It panics when Name or Apply is missing: a definition is static code, and
// failing at registration beats failing in the middle of a log entry.
func Define[S any](d Definition[S]) Behavior {
	if d.Name == "" || d.Apply == nil {
		panic(fmt.Sprintf("actor: Define(%q) needs a Name and an Apply function", d.Name))
	}
	return &typed[S]{d: d, verbs: sortedKeys(d.Commands)}
}

type typed[S any] struct {
	d     Definition[S]
	verbs []string
}

func (t *typed[S]) Type() string    { return t.d.Name }
func (t *typed[S]) Verbs() []string { return t.verbs }
func (t *typed[S]) Version() string { return t.d.Revision }

// Upcast implements Upcaster; without Definition.Upcast it changes nothing.
func (t *typed[S]) Upcast(eventType string, v uint32, payload []byte) (string, uint32, []byte, error) {
	if t.d.Upcast == nil {
		return eventType, v, payload, nil
	}
	return t.d.Upcast(eventType, v, payload)
}

func (t *typed[S]) Validate(cmd *Command) error {
	if t.d.Validate == nil {
		return nil
	}
	return t.d.Validate(cmd)
}

func (t *typed[S]) Decide(ctx *Context, state []byte, cmd *Command) ([]NewEvent, error) {
	h, ok := t.d.Commands[cmd.Verb()]
	if !ok {
		return nil, Invalid("actor type %q has no verb %q; verbs: %v", t.d.Name, cmd.Verb(), t.verbs)
	}
	s, err := t.decode(state)
	if err != nil {
		// Every replica holds the same bytes, so refusing is consistent; the
		// code tells operators the stored state, not the command, is at fault.
		return nil, Reject(CodeStateDecode, "stored %s state does not decode: %v", t.d.Name, err)
	}
	return h(ctx, s, cmd)
}

func (t *typed[S]) Evolve(state []byte, ev *Event) ([]byte, error) {
	s, err := t.decode(state)
	if err != nil {
		return nil, err
	}
	if err := t.d.Apply(s, ev); err != nil {
		return nil, err
	}
	if t.d.EncodeState != nil {
		return t.d.EncodeState(s)
	}
	return json.Marshal(s)
}

func (t *typed[S]) decode(state []byte) (*S, error) {
	s := new(S)
	if len(state) == 0 {
		return s, nil
	}
	var err error
	if t.d.DecodeState != nil {
		err = t.d.DecodeState(state, s)
	} else {
		err = json.Unmarshal(state, s)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// sortedKeys returns the keys of m in order; ranging over a map directly
// would be nondeterministic.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m { //rhizon:deterministic keys are sorted below
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// DecodePayload unmarshals a JSON payload into v, returning an Invalid
// rejection that says what is wrong. Unknown fields are refused.
func DecodePayload(cmd *Command, v any) error {
	if len(cmd.Payload) == 0 {
		return Invalid("%s needs a JSON object payload", cmd.Type)
	}
	dec := json.NewDecoder(bytesReader(cmd.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Invalid("%s payload: %v", cmd.Type, err)
	}
	// dec.More is false before a stray '}' or ']', so ask for one more token.
	if _, err := dec.Token(); err != io.EOF {
		return Invalid("%s payload: trailing data after the JSON object", cmd.Type)
	}
	return nil
}

// MustJSON encodes v as JSON and panics if it cannot (only for values whose
// types always encode, such as structs of plain fields).
func MustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
