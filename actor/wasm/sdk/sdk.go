// Package sdk is the guest side of Rhizon's WebAssembly actors: an actor
// written in Go against it compiles, with the standard toolchain, to a module
// that actor/wasm runs inside a shard's deterministic apply:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o counter.wasm ./examples/wasm/counter
//
// The module's main package calls Register from an init function and has an
// empty main. Decide and Evolve must be deterministic: use Context for time,
// randomness and effects, never goroutines or map iteration order (the host
// gives the clock and random source the entry's values, so time.Now and
// math/rand do not diverge, but they are not the logical time's API).
// Inputs (state, command type, payload) are valid only during the call.
package sdk

// Event is one event Decide records: the name ("added" becomes
// "evt.<actor_type>.added") and a JSON payload.
type Event struct {
	Name    string
	Payload []byte
	// SchemaVersion is the version of the payload's schema (0 means 1).
	// Bump it when the payload's shape changes, and register an Upcast
	// that turns the older versions into the new one.
	SchemaVersion uint32
}

// Actor is the user's actor type. Both functions are required.
type Actor struct {
	// Verbs lists the command verbs Decide accepts ("add" for
	// "cmd.counter.add"); the gateway refuses any other before the log.
	Verbs []string
	// Decide checks a command ("cmd.<actor_type>.<verb>" and its JSON
	// payload) against the state (empty for a new entity) and returns the
	// events to record, or an error: a *Rejection from Reject or Invalid,
	// any other error is a business rejection with code "error".
	Decide func(ctx *Context, state []byte, cmdType string, payload []byte) ([]Event, error)
	// Evolve returns the state after an event ("evt.<actor_type>.<name>").
	Evolve func(state []byte, eventType string, payload []byte) ([]byte, error)
}

var registered *Actor

// Register installs the actor. Call it once, from an init function of the
// main package.
func Register(a Actor) {
	if a.Decide == nil || a.Evolve == nil {
		panic("sdk: Register needs Decide and Evolve")
	}
	registered = &a
}

// UpcastFunc turns an event recorded with an older payload schema into a
// newer one: it returns the event's type (usually unchanged), version and
// payload. An event it does not know, or one already current, it returns as
// given. It must be pure and deterministic.
type UpcastFunc func(eventType string, schemaVersion uint32, payload []byte) (string, uint32, []byte, error)

var upcast UpcastFunc

// Upcast installs the module's upcaster (exported as rhizon_upcast). The
// node calls it for the events History and Watch show, again and again
// until the version stops changing (at most 32 steps; it may not lower the
// version); stored events are never rewritten. Each call starts from the
// module's initial state, under the fuel budget and memory limit of
// Decide; a panic or a returned error makes History or Watch fail naming
// the event. Call it once, from an init function, beside Register.
func Upcast(f UpcastFunc) { upcast = f }

// RegisteredUpcast returns the upcaster Upcast installed, or nil (for
// native tests, as Registered).
func RegisteredUpcast() UpcastFunc { return upcast }

// Registered returns the actor Register installed, or nil: a native test of
// the module's package can call its Decide and Evolve directly (without a
// Context: the Context's methods need the host).
func Registered() *Actor { return registered }

// Rejection refuses a command. Invalid rejections are for malformed payloads
// (gRPC InvalidArgument, nothing recorded but the audit); the others are
// business rejections, recorded with their code.
type Rejection struct {
	Invalid bool
	Code    string
	Message string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }

// Reject returns a business rejection with an actor-defined code.
func Reject(code, message string) error { return &Rejection{Code: code, Message: message} }

// Invalid returns a rejection for a payload this actor cannot accept.
func Invalid(message string) error {
	return &Rejection{Invalid: true, Code: "invalid", Message: message}
}

// Context is what Decide may consult and ask for besides state and command.
// Everything it returns comes from the log entry, so it is the same on every
// replica.
type Context struct{}

// Now is the logical time of the log entry, in Unix milliseconds.
func (*Context) Now() int64 { return hostNow() }

// Rand returns the next value of the entry's seeded generator (the same
// sequence the native actor.Context.Rand gives).
func (*Context) Rand() uint64 { return uint64(hostRand()) }

// Version is the entity's current version (events applied so far).
func (*Context) Version() uint64 { return uint64(hostVersion()) }

// Send asks for cmdType with payload to be delivered to actorType/entityID in
// this entity's tenant and workspace.
func (*Context) Send(actorType, entityID, cmdType string, payload []byte) {
	hostSend(actorType, entityID, cmdType, payload)
}

// SetTimer schedules the entity's timer name at the logical time at (Unix
// ms); it arrives as "cmd.<actor_type>.timer".
func (*Context) SetTimer(name string, at int64, payload []byte) { hostSetTimer(name, at, payload) }

// CancelTimer removes the entity's timer name, if set.
func (*Context) CancelTimer(name string) { hostCancelTimer(name) }

// Reply attaches bytes to the command's result.
func (*Context) Reply(b []byte) { hostReply(b) }
