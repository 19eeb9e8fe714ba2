// Package stream names the JetStream wire of Rhizon: stream names, subjects,
// headers and the accounts' derived names, and the vocabulary of the
// asynchronous path (what a Watch selects, where an enqueued command went)
// shared by the gateway, the ingress and clients. It is a leaf (standard library and
// actor only) so that producers, consumers and the bench speak the wire
// without linking the embedded NATS server or a shard.
package stream

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/rhizon/rhizon/actor"
)

// Stream and subject names. One ingress subject per shard; one events
// subject per entity, so consumers filter by tenant, workspace, actor type and
// entity with NATS wildcards.
const (
	// IngressStream holds the commands of the nodes' own producers
	// (gateways, relays, signed or token-carrying publishers); it keeps
	// limits retention and each shard leader purges what it applied.
	// RHIZON_INGRESS, a work-queue stream, held them before (moved over
	// by the nodes at start).
	IngressStream = "RHIZON_COMMANDS"
	EventsStream  = "RHIZON_EVENTS"
	DeadStream    = "RHIZON_DEAD"

	IngressPrefix = "rhizon.in."
	// ProducerPrefix: rhizon.ext.<producer account>.<shard>, in the node
	// account, is where a producer's rhizon.in.<shard> lands.
	ProducerPrefix = "rhizon.ext."
	EventsPrefix   = "rhizon.evt."
	DeadPrefix     = "rhizon.dead."
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
	// HeaderMovedSeq is the sequence a command had in the work-queue
	// stream it was moved from: its derived id and idempotency key stay
	// those it had there, so one that already applied is not applied again.
	HeaderMovedSeq = "Rhizon-Moved-Seq"
)

// DeadLetterMaxBody is how much of a message's body its dead letter keeps.
const DeadLetterMaxBody = 64 << 10

// MaxCommandBytes bounds a command message: a 1 MiB payload as protojson
// (base64) with its envelope. The ingress streams and the producer accounts
// of the embedded server both enforce it.
const MaxCommandBytes = 2 << 20

// NodeInboxPrefix is the inbox prefix of the nodes' connections. The
// node account is the nodes' and operators' alone; the prefix keeps
// the replies the nodes get (pulled commands with their tokens,
// Watch's events) apart from an operator tool's _INBOX.> and, with an
// external NATS where producers may share the account, from theirs.
// Operators' tools with the node credentials should use it too (the
// nats CLI: --inbox-prefix).
const NodeInboxPrefix = "_RHIZON_INBOX"

// ProducerAccount is the NATS account of the producer with this bearer
// token: derived from it, so every node names it alike, and revealing
// nothing of it.
func ProducerAccount(token string) string {
	return "P" + strings.ToUpper(Derive("rhizon nats producer account v1", token)[:20])
}

// ProducerStream is the stream in the node account that holds the commands
// a producer account published.
func ProducerStream(account string) string { return "RHIZON_COMMANDS_" + account }

// ProducerSubject is where a producer's command for shard lands in the node
// account: it published it on IngressSubject(shard) in its own account.
func ProducerSubject(account string, shard uint32) string {
	return ProducerPrefix + account + "." + strings.TrimPrefix(IngressSubject(shard), IngressPrefix)
}

// ProducerOf is the producer account of a subject in the node account, ""
// for the nodes' own subjects.
func ProducerOf(subject string) string {
	rest, ok := strings.CutPrefix(subject, ProducerPrefix)
	if !ok {
		return ""
	}
	acct, _, _ := strings.Cut(rest, ".")
	return acct
}

// Derive is a name or password for one purpose (label) from a secret:
// every node computes the same one, and one purpose's value reveals
// neither the secret nor another purpose's.
func Derive(label, secret string) string {
	h := hmac.New(sha256.New, []byte(label))
	h.Write([]byte(secret))
	return hex.EncodeToString(h.Sum(nil))
}

// IngressSubject is the subject commands for shard are published to.
func IngressSubject(shard uint32) string {
	return IngressPrefix + strconv.FormatUint(uint64(shard), 10)
}

// DeadSubject is where shard's dead letters go.
func DeadSubject(shard uint32) string {
	return DeadPrefix + strconv.FormatUint(uint64(shard), 10)
}

// EventSubject is the subject of events of addr:
// rhizon.evt.<tenant>.<workspace>.<actor_type>.<entity>, each token escaped.
func EventSubject(addr actor.Address) string {
	return EventsPrefix + Token(addr.Tenant) + "." + Token(addr.Workspace) + "." + Token(addr.ActorType) + "." + Token(addr.EntityID)
}

// RejectionSuffix is the last token of a rejection's subject: a rejection
// is published on the subject of the entity whose history records it, plus
// this token. Event filters (EventFilter: exactly four tokens after the
// prefix) never match it, so consumers of events see no rejections unless
// they ask (RejectionFilter, or rhizon.evt.<tenant>.> for both).
const RejectionSuffix = "rejected"

// RejectionSubject is the subject of the rejections recorded in addr's
// history: rhizon.evt.<tenant>.<workspace>.<actor_type>.<entity>.rejected.
// A violation is recorded in its offender's audit stream, so it is
// published under that stream's address (tenant _rhizon, workspace audit),
// never under the tenant it targeted.
func RejectionSubject(addr actor.Address) string {
	return EventSubject(addr) + "." + RejectionSuffix
}

// RejectionFilter is EventFilter for rejections.
func RejectionFilter(tenant, workspace, actorType, entity string) string {
	return EventFilter(tenant, workspace, actorType, entity) + "." + RejectionSuffix
}

// RejectionMsgID is the JetStream message id of the rejection recorded at
// (shard, index, ordinal): the same on every replica and every attempt.
func RejectionMsgID(shard uint32, index uint64, ordinal uint32) string {
	return "rejection/" + strconv.FormatUint(uint64(shard), 10) + "/" + strconv.FormatUint(index, 10) + "/" + strconv.FormatUint(uint64(ordinal), 10)
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
	return EventsPrefix + Token(tenant) + "." + Token(workspace) + "." + at + "." + ent
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
