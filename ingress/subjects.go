package ingress

import (
	"strconv"
	"strings"

	"github.com/rhizon/rhizon/actor"
)

// Stream and subject names. One ingress subject per shard; one events
// subject per entity, so consumers filter by tenant, workspace, actor type and
// entity with NATS wildcards.
const (
	IngressStream = "RHIZON_INGRESS"
	EventsStream  = "RHIZON_EVENTS"
	DeadStream    = "RHIZON_DEAD"

	ingressPrefix = "rhizon.in."
	// producerPrefix: rhizon.ext.<producer account>.<shard>, in the node
	// account, is where a producer's rhizon.in.<shard> lands.
	producerPrefix = "rhizon.ext."
	eventsPrefix   = "rhizon.evt."
	deadPrefix     = "rhizon.dead."
)

// Message headers.
const (
	// HeaderAuthorization carries "Bearer <token>" from external producers;
	// the token is checked like the gateway's.
	HeaderAuthorization = "Authorization"
	// HeaderSignature carries the HMAC of the body by the cluster's internal
	// key: the command's security context was set by a gateway or a relay.
	HeaderSignature = "Rhizon-Signature"
	// HeaderEncoding is "json" for protojson bodies; protobuf otherwise.
	HeaderEncoding = "Rhizon-Encoding"
	// HeaderReason, HeaderKind, HeaderSource describe a dead letter.
	HeaderReason = "Rhizon-Reason"
	HeaderKind   = "Rhizon-Kind"
	HeaderSource = "Rhizon-Source"
	// HeaderSize and HeaderDigest give a dead letter's original body size
	// and its digest ("sha256=<hex>"): the dead letter keeps only the
	// first DeadLetterMaxBody bytes of the body.
	HeaderSize   = "Rhizon-Size"
	HeaderDigest = "Rhizon-Digest"
)

// DeadLetterMaxBody is how much of a message's body its dead letter keeps.
const DeadLetterMaxBody = 64 << 10

// IngressSubject is the subject commands for shard are published to.
func IngressSubject(shard uint32) string {
	return ingressPrefix + strconv.FormatUint(uint64(shard), 10)
}

// DeadSubject is where shard's dead letters go.
func DeadSubject(shard uint32) string {
	return deadPrefix + strconv.FormatUint(uint64(shard), 10)
}

// EventSubject is the subject of events of addr:
// rhizon.evt.<tenant>.<workspace>.<actor_type>.<entity>, each token escaped.
func EventSubject(addr actor.Address) string {
	return eventsPrefix + Token(addr.Tenant) + "." + Token(addr.Workspace) + "." + Token(addr.ActorType) + "." + Token(addr.EntityID)
}

// EventFilter is the subject filter for the events of a tenant and
// workspace, optionally of one actor type and, with it, one entity.
func EventFilter(tenant, workspace, actorType, entity string) string {
	at, ent := "*", "*"
	if actorType != "" {
		at = Token(actorType)
	}
	if entity != "" {
		ent = Token(entity)
	}
	return eventsPrefix + Token(tenant) + "." + Token(workspace) + "." + at + "." + ent
}

// Token escapes an identifier for use as one subject token. Identifiers are
// printable ASCII without spaces, '/' or '*' (actor.ValidateID), but may hold
// '.', which separates tokens, and '>', a wildcard: those and '%' are
// percent-encoded, so the mapping is one-to-one.
func Token(id string) string {
	if !strings.ContainsAny(id, ".>%") {
		return id
	}
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		switch c := id[i]; c {
		case '.':
			b.WriteString("%2E")
		case '>':
			b.WriteString("%3E")
		case '%':
			b.WriteString("%25")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
