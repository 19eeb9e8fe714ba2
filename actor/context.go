package actor

import "bytes"

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TimerVerb is the verb of the command the engine delivers when a timer fires:
// "cmd.<actor_type>.timer" with a TimerFired payload, from the system principal.
const TimerVerb = "timer"

// TimerFired is the payload of a timer command.
type TimerFired struct {
	Name    string `json:"name"`
	At      int64  `json:"at"`
	Payload []byte `json:"payload,omitempty"`
}

// Send is a command an actor asked to send to another entity. It is written to
// the outbox in the same batch as the events; the engine gives it a
// deterministic id and idempotency key.
type Send struct {
	To      Address
	Type    string
	Payload []byte
}

// TimerOp sets (Cancel false) or cancels a named timer of the entity.
type TimerOp struct {
	Name    string
	At      int64
	Payload []byte
	Cancel  bool
}

// Context is what Decide may consult besides state and command. Everything in
// it is derived from the log entry, so it is the same on every replica.
type Context struct {
	addr    Address
	sec     Security
	at      int64
	rng     uint64
	version uint64
	shard   uint32
	index   uint64

	sends  []Send
	timers []TimerOp
	reply  []byte
}

// NewContext is used by the engine to build the context of one command. seed
// must be derived from the log position.
func NewContext(addr Address, sec Security, at int64, seed, version uint64) *Context {
	return &Context{addr: addr, sec: sec, at: at, rng: seed, version: version}
}

// NewEntryContext is NewContext that also records the shard and the log
// index of the entry (see Entry).
func NewEntryContext(addr Address, sec Security, at int64, seed, version uint64, shard uint32, index uint64) *Context {
	return &Context{addr: addr, sec: sec, at: at, rng: seed, version: version, shard: shard, index: index}
}

// Entry is the shard and log index of the entry being applied. A runtime
// that keeps state across calls (actor/wasm) resets it per entry, so that
// what a call can observe is a function of the log alone.
func (c *Context) Entry() (shard uint32, index uint64) { return c.shard, c.index }

// Now is the logical time of the log entry, in Unix milliseconds. It never
// decreases along a shard's log.
func (c *Context) Now() int64 { return c.at }

// Address is the entity being decided.
func (c *Context) Address() Address { return c.addr }

// Principal is the verified principal that sent the command.
func (c *Context) Principal() Principal { return c.sec.Principal }

// SentBy reports whether the command was sent by the actor at from (its
// tenant and workspace default to this entity's): a send's principal is made
// by the engine and cannot be named by a credential, so an actor can trust a
// reply that passes this check.
func (c *Context) SentBy(from Address) bool {
	if from.Tenant == "" {
		from.Tenant = c.addr.Tenant
	}
	if from.Workspace == "" {
		from.Workspace = c.addr.Workspace
	}
	// Sends never leave their tenant and workspace (the engine's egress
	// check), so a send from another one cannot reach this entity.
	return from.Tenant == c.addr.Tenant && from.Workspace == c.addr.Workspace &&
		c.sec.Principal == SenderPrincipal(from)
}

// Version is the entity's current version (events applied so far).
func (c *Context) Version() uint64 { return c.version }

// Rand returns the next value of a generator seeded from the log position:
// the same sequence on every replica and on replay.
func (c *Context) Rand() uint64 {
	// splitmix64: tiny, good enough for ids and jitter, and deterministic.
	c.rng += 0x9e3779b97f4a7c15
	z := c.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Send asks for cmdType with payload to be delivered to the entity at to. An
// empty tenant or workspace means the sender's own; sending into another
// tenant or workspace is a violation that rejects the whole command.
func (c *Context) Send(to Address, cmdType string, payload []byte) {
	if to.Tenant == "" {
		to.Tenant = c.addr.Tenant
	}
	if to.Workspace == "" {
		to.Workspace = c.addr.Workspace
	}
	c.sends = append(c.sends, Send{To: to, Type: cmdType, Payload: payload})
}

// SetTimer schedules (or reschedules) the entity's timer name to fire at the
// logical time at (Unix ms). Setting it again replaces the earlier one.
func (c *Context) SetTimer(name string, at int64, payload []byte) {
	c.timers = append(c.timers, TimerOp{Name: name, At: at, Payload: payload})
}

// CancelTimer removes the entity's timer name, if set.
func (c *Context) CancelTimer(name string) {
	c.timers = append(c.timers, TimerOp{Name: name, Cancel: true})
}

// Reply attaches bytes to the command's Result (for example the document a
// "get" read at the command's position in the log).
func (c *Context) Reply(b []byte) { c.reply = b }

// Effects returns what Decide asked for besides events. Used by the engine.
func (c *Context) Effects() (sends []Send, timers []TimerOp, reply []byte) {
	return c.sends, c.timers, c.reply
}
