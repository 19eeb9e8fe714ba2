package actor

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on every input. They are part of the API: the gateway rejects
// anything larger with InvalidArgument before it reaches the log.
const (
	MaxIDLen             = 128     // tenant, workspace, actor type, entity id, command id, principal id
	MaxIdempotencyKeyLen = 256     // idempotency key
	MaxTypeLen           = 128     // command and event type names
	MaxPayloadBytes      = 1 << 20 // command payload (1 MiB)
	MaxEventsPerCommand  = 64      // events one Decide may emit
	MaxSendsPerCommand   = 64      // Send calls one Decide may make
	MaxTimersPerCommand  = 16      // SetTimer/CancelTimer calls one Decide may make
	MaxStateBytes        = 4 << 20 // encoded entity state after Evolve
	MaxTraceLen          = 256     // traceparent / tracestate
)

// Address names one entity: tenant / workspace / actor_type / entity_id.
// Shards are a consistent hash of the whole address.
type Address struct {
	Tenant    string `json:"tenant"`
	Workspace string `json:"workspace"`
	ActorType string `json:"actor_type"`
	EntityID  string `json:"entity_id"`
}

// String renders the address as tenant/workspace/actor_type/entity_id.
func (a Address) String() string {
	return a.Tenant + "/" + a.Workspace + "/" + a.ActorType + "/" + a.EntityID
}

// Key is a canonical, unambiguous byte encoding of the address (each part is
// length-prefixed), used for hashing and storage keys.
func (a Address) Key() []byte {
	b := make([]byte, 0, 8+len(a.Tenant)+len(a.Workspace)+len(a.ActorType)+len(a.EntityID))
	for _, p := range [...]string{a.Tenant, a.Workspace, a.ActorType, a.EntityID} {
		b = append(b, byte(len(p)>>8), byte(len(p)))
		b = append(b, p...)
	}
	return b
}

// Validate reports the first part of the address that is missing, too long or
// malformed.
func (a Address) Validate() error {
	for _, f := range [...]struct{ name, v string }{
		{"tenant", a.Tenant}, {"workspace", a.Workspace},
		{"actor_type", a.ActorType}, {"entity_id", a.EntityID},
	} {
		if err := ValidateID(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

// ValidateID checks one identifier: non-empty, at most MaxIDLen bytes, printable
// ASCII without '/', whitespace or control characters.
func ValidateID(field, v string) error {
	if v == "" {
		return invalidf("%s is required", field)
	}
	if len(v) > MaxIDLen {
		return invalidf("%s is %d bytes; the limit is %d", field, len(v), MaxIDLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '*' {
			return invalidf("%s %q has character %q at %d; use printable ASCII without spaces, '/' or '*'", field, v, c, i)
		}
	}
	return nil
}

// PrincipalType says what kind of caller a principal is.
type PrincipalType string

// The principal types. Anything else is rejected.
const (
	PrincipalUser    PrincipalType = "user"
	PrincipalService PrincipalType = "service"
	PrincipalAgent   PrincipalType = "agent"
	PrincipalSystem  PrincipalType = "system"
)

// ParsePrincipalType returns the principal type named s, or an error listing
// the valid ones.
func ParsePrincipalType(s string) (PrincipalType, error) {
	switch t := PrincipalType(s); t {
	case PrincipalUser, PrincipalService, PrincipalAgent, PrincipalSystem:
		return t, nil
	}
	return "", invalidf("principal type %q is not one of user, service, agent, system", s)
}

// Principal is the verified identity behind a command. The gateway sets it
// from the caller's credentials; the client never does.
type Principal struct {
	ID   string        `json:"id"`
	Type PrincipalType `json:"type"`
}

// Validate checks the id and the type of a principal a credential or an
// on_behalf_of names. Ids starting with SenderPrefix are refused: they name
// actors, and only the engine may send as one.
func (p Principal) Validate() error {
	if strings.HasPrefix(p.ID, SenderPrefix) {
		return invalidf("principal id %q starts with %q, which is reserved for actor-to-actor sends", p.ID, SenderPrefix)
	}
	return p.validate()
}

func (p Principal) validate() error {
	if err := ValidateID("principal id", p.ID); err != nil {
		return err
	}
	_, err := ParsePrincipalType(string(p.Type))
	return err
}

// SenderPrefix starts the principal id of every actor-to-actor send
// ("actor:<type>:<entity>", see SenderPrincipal). Credentials and on_behalf_of
// cannot name such a principal, so a receiving actor can trust it.
const SenderPrefix = "actor:"

// Idempotency-key namespaces the engine keeps for itself: a timer firing is
// applied under "timer/<name>/<at>" and an actor's send under "send/<id>". A
// client key in them could take the engine's key first and make it a
// duplicate (a timer that never fires), so Validate refuses them.
const (
	TimerKeyPrefix = "timer/"
	SendKeyPrefix  = "send/"
)

// SenderPrincipal is the principal of the commands the actor at src sends:
// a service whose id is "actor:<type>:<entity>". Ids are at most MaxIDLen
// bytes, so a long one is cut and completed with a hash that keeps it unique.
// The stored sends of existing clusters carry these exact ids: never change
// the derivation.
func SenderPrincipal(src Address) Principal {
	id := SenderPrefix + src.ActorType + ":" + src.EntityID
	if len(id) > MaxIDLen {
		// sha256("sender", len32(key), key), first 16 bytes as hex.
		key := src.Key()
		b := append([]byte("sender"), binary.BigEndian.AppendUint32(nil, uint32(len(key)))...)
		sum := sha256.Sum256(append(b, key...))
		h := hex.EncodeToString(sum[:16])
		id = id[:MaxIDLen-len(h)-1] + "~" + h
	}
	return Principal{ID: id, Type: PrincipalService}
}

// Scope is one tenant/workspace pair a principal may act in. Workspace "*"
// means every workspace of the tenant.
type Scope struct {
	Tenant    string `json:"tenant"`
	Workspace string `json:"workspace"`
}

// Allows reports whether the scope covers tenant/workspace.
func (s Scope) Allows(tenant, workspace string) bool {
	return s.Tenant == tenant && (s.Workspace == "*" || s.Workspace == workspace)
}

// Security is the security context a command carries: who sent it and where it
// may act. The engine re-checks it on every replica.
type Security struct {
	Principal Principal `json:"principal"`
	Scopes    []Scope   `json:"scopes"`
}

// Allows reports whether any scope covers tenant/workspace.
func (s Security) Allows(tenant, workspace string) bool {
	for _, sc := range s.Scopes {
		if sc.Allows(tenant, workspace) {
			return true
		}
	}
	return false
}

// Command is a request to an entity. Type is "cmd.<actor_type>.<verb>".
type Command struct {
	ID              string   `json:"id"`
	Type            string   `json:"type"`
	Address         Address  `json:"address"`
	Payload         []byte   `json:"payload,omitempty"`
	IdempotencyKey  string   `json:"idempotency_key"`
	ExpectedVersion *uint64  `json:"expected_version,omitempty"`
	Security        Security `json:"security"`
	CausationID     string   `json:"causation_id,omitempty"`
	CorrelationID   string   `json:"correlation_id,omitempty"`
	TraceParent     string   `json:"traceparent,omitempty"`
	TraceState      string   `json:"tracestate,omitempty"`
}

// Verb returns the last segment of the command type ("add" in "cmd.counter.add").
func (c *Command) Verb() string {
	v, _ := ParseCommandType(c.Type)
	return v
}

// CommandType builds "cmd.<actorType>.<verb>".
func CommandType(actorType, verb string) string { return "cmd." + actorType + "." + verb }

// EventType builds "evt.<actorType>.<name>".
func EventType(actorType, name string) string { return "evt." + actorType + "." + name }

// ParseCommandType splits "cmd.<actor_type>.<verb>" into its verb and actor
// type; both are empty when t does not have that shape.
func ParseCommandType(t string) (verb string, actorType string) {
	rest, ok := strings.CutPrefix(t, "cmd.")
	if !ok {
		return "", ""
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 || i == len(rest)-1 {
		return "", ""
	}
	return rest[i+1:], rest[:i]
}

// Validate checks everything about the command that does not need state:
// ids, lengths, the type name against the address, the payload size and the
// security context. It is deterministic and runs both at the gateway and in
// the engine.
func (c *Command) Validate() error {
	if err := ValidateID("command id", c.ID); err != nil {
		return err
	}
	if err := c.Address.Validate(); err != nil {
		return err
	}
	verb, at := ParseCommandType(c.Type)
	if verb == "" {
		return invalidf("command type %q must look like cmd.<actor_type>.<verb>", c.Type)
	}
	if len(c.Type) > MaxTypeLen {
		return invalidf("command type is %d bytes; the limit is %d", len(c.Type), MaxTypeLen)
	}
	if at != c.Address.ActorType {
		return invalidf("command type %q does not match actor type %q of the address", c.Type, c.Address.ActorType)
	}
	if verb == TimerVerb {
		return invalidf("command type %q: the %q verb is delivered by the engine when a timer fires; it cannot be submitted", c.Type, TimerVerb)
	}
	if c.IdempotencyKey == "" {
		return invalidf("idempotency_key is required")
	}
	if len(c.IdempotencyKey) > MaxIdempotencyKeyLen {
		return invalidf("idempotency_key is %d bytes; the limit is %d", len(c.IdempotencyKey), MaxIdempotencyKeyLen)
	}
	if err := printable("idempotency_key", c.IdempotencyKey); err != nil {
		return err
	}
	if len(c.Payload) > MaxPayloadBytes {
		return invalidf("payload is %d bytes; the limit is %d", len(c.Payload), MaxPayloadBytes)
	}
	for _, f := range [...]struct{ name, v string }{
		{"causation_id", c.CausationID}, {"correlation_id", c.CorrelationID},
		{"traceparent", c.TraceParent}, {"tracestate", c.TraceState},
	} {
		if len(f.v) > MaxTraceLen {
			return invalidf("%s is %d bytes; the limit is %d", f.name, len(f.v), MaxTraceLen)
		}
		if err := printable(f.name, f.v); err != nil {
			return err
		}
	}
	p := c.Security.Principal
	if !strings.HasPrefix(p.ID, SenderPrefix) {
		if strings.HasPrefix(c.IdempotencyKey, TimerKeyPrefix) || strings.HasPrefix(c.IdempotencyKey, SendKeyPrefix) {
			return invalidf("idempotency_key %q starts with %q or %q, which the engine keeps for timers and actor sends; choose another key",
				c.IdempotencyKey, TimerKeyPrefix, SendKeyPrefix)
		}
		return p.Validate()
	}
	// An actor's send: only the engine makes these (credentials cannot name
	// such a principal), always as a service and under a send key.
	if p.Type != PrincipalService || !strings.HasPrefix(c.IdempotencyKey, SendKeyPrefix) {
		return invalidf("principal id %q is reserved for actor-to-actor sends (a service principal with a %q idempotency key)", p.ID, SendKeyPrefix)
	}
	return p.validate()
}

// printable refuses control characters and invalid UTF-8 in a free-form
// field: they end up in logs, audit records and terminals.
func printable(field, v string) error {
	for i, r := range v {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(v[i:]); size <= 1 {
				return invalidf("%s has invalid UTF-8 at byte %d; use printable UTF-8 text", field, i)
			}
		}
		if unicode.IsControl(r) {
			return invalidf("%s has control character %q at byte %d; use printable text", field, r, i)
		}
	}
	return nil
}

// Event is an immutable fact about one entity. Version is the entity's version
// after the event; (Shard, Index, Ordinal) is its position in the shard's log.
type Event struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	Address       Address   `json:"address"`
	Version       uint64    `json:"version"`
	Payload       []byte    `json:"payload,omitempty"`
	At            int64     `json:"at"` // logical time, Unix milliseconds
	CommandID     string    `json:"command_id"`
	CausationID   string    `json:"causation_id,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	TraceParent   string    `json:"traceparent,omitempty"`
	Principal     Principal `json:"principal"`
	Shard         uint32    `json:"shard"`
	Index         uint64    `json:"index"`
	Ordinal       uint32    `json:"ordinal"`
	// SchemaVersion is the payload's schema version as stored: 0 stands for
	// 1 (see Schema), so version-1 events keep the bytes they always had.
	SchemaVersion uint32 `json:"schema_version,omitempty"`
}

// Schema is the event's payload schema version: SchemaVersion, or 1 when it
// is 0 (every event recorded before schema versions existed).
func (e *Event) Schema() uint32 { return max(e.SchemaVersion, 1) }

// StoredSchemaVersion is how schema version v is stored: 0 for 1 (and for 0,
// "not declared"), v otherwise.
func StoredSchemaVersion(v uint32) uint32 {
	if v <= 1 {
		return 0
	}
	return v
}

// NewEvent is what Decide returns: a name ("evt.<actor_type>.<name>" is built
// by the engine) and a payload. The engine fills in everything else.
type NewEvent struct {
	Name    string
	Payload []byte
	// SchemaVersion declares the version of the payload's schema (0 means
	// 1). Bump it when the payload's shape changes, and give the actor an
	// Upcaster that turns the older versions into the new one.
	SchemaVersion uint32
}

// Status is the outcome of a command.
type Status int32

// The outcomes.
const (
	StatusAccepted Status = 1
	StatusRejected Status = 2
)

// Reason says why a command was rejected.
type Reason int32

// The rejection reasons.
const (
	ReasonNone      Reason = 0
	ReasonConflict  Reason = 1 // expected_version did not match
	ReasonViolation Reason = 2 // scope or principal check failed
	ReasonInvalid   Reason = 3 // the command is malformed for this actor
	ReasonBusiness  Reason = 4 // the actor refused it (a business rule)
)

// String names the reason as the API does.
func (r Reason) String() string {
	switch r {
	case ReasonConflict:
		return "conflict"
	case ReasonViolation:
		return "violation"
	case ReasonInvalid:
		return "invalid"
	case ReasonBusiness:
		return "business"
	}
	return "none"
}

// Result is what a command produced. A command whose idempotency key was
// already applied gets the original Result back: with Duplicate set when it
// is another submission (another command id), with Replay set when it is
// another attempt of the same one (same command id). Both depend only on the
// log and the stored result, so every replica answers the same.
type Result struct {
	CommandID string  `json:"command_id"`
	Status    Status  `json:"status"`
	Reason    Reason  `json:"reason,omitempty"`
	Code      string  `json:"code,omitempty"`    // actor-defined code for business rejections
	Message   string  `json:"message,omitempty"` // human-readable reason
	Version   uint64  `json:"version"`           // entity version after the command
	Events    []Event `json:"events,omitempty"`
	Index     uint64  `json:"index"`               // raft index of the entry that decided it
	Reply     []byte  `json:"reply,omitempty"`     // what Decide passed to Context.Reply
	Duplicate bool    `json:"duplicate,omitempty"` // true when this is the stored result of another submission (other command id)
	Replay    bool    `json:"replay,omitempty"`    // true when this is the stored result of an earlier attempt of this command (same command id)
}

// Rejection is returned by Decide to refuse a command. Use Reject for a
// business rule and Invalid for a malformed payload.
type Rejection struct {
	Reason  Reason
	Code    string
	Message string
}

func (r *Rejection) Error() string {
	if r.Code != "" && r.Code != r.Reason.String() {
		return r.Reason.String() + ": " + r.Code + ": " + r.Message
	}
	return r.Reason.String() + ": " + r.Message
}

// Reject returns a business rejection with an actor-defined code, for example
// Reject(CodeInsufficientFunds, "balance 10 is less than 25").
func Reject(code, format string, args ...any) error {
	return &Rejection{Reason: ReasonBusiness, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns a rejection for a command whose payload this actor cannot
// accept. Nothing but the audit of the attempt is recorded.
func Invalid(format string, args ...any) error {
	return &Rejection{Reason: ReasonInvalid, Code: CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

func invalidf(format string, args ...any) error {
	return &Rejection{Reason: ReasonInvalid, Code: CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// AsRejection extracts a *Rejection from err.
func AsRejection(err error) (*Rejection, bool) {
	var r *Rejection
	ok := errors.As(err, &r)
	return r, ok
}
