package stream

import (
	"encoding/json"
	"errors"
	"time"
)

// HeaderRedrive and HeaderRedriveSignature make a dead letter redrivable:
// the command as the ingress had authenticated it (its security context
// set, protobuf, base64) and a node's signature over it. Only messages that
// were authenticated and valid but could not apply on the node ("poison",
// e.g. an actor type not deployed yet) carry them, and only commands of at
// most RedriveMaxCommand bytes; the signature keeps a producer from making
// a node re-sign a security context of its choosing.
const (
	HeaderRedrive          = "Rhizon-Redrive"
	HeaderRedriveSignature = "Rhizon-Redrive-Signature"
)

// RedriveMaxCommand bounds the command a dead letter keeps for a redrive.
const RedriveMaxCommand = 32 << 10

// DeadLetter is one message of the dead-letter stream, as the admin API
// shows it.
type DeadLetter struct {
	Sequence uint64
	Subject  string
	Shard    uint32
	Time     time.Time
	// Kind is "rejected" (can never apply as it is) or "poison" (kept
	// failing on the node); Reason says why, Source where it came from.
	Kind, Reason, Source string
	// Size and Digest are the original body's; Body is its first
	// DeadLetterMaxBody bytes.
	Size   int
	Digest string
	Body   []byte
	// Headers are the message's other headers (traceparent, encoding).
	Headers map[string]string
	// Command is the body decoded as a command (protojson), when it is one.
	Command json.RawMessage
	// Redrivable says whether Redrive may publish it again; NotRedrivable
	// says why not.
	Redrivable    bool
	NotRedrivable string
}

// ErrDeadLetterNotFound: no dead letter has that sequence (never, or the
// stream's limits dropped it).
var ErrDeadLetterNotFound = errors.New("no dead letter with that sequence")

// ErrNotRedrivable wraps the reason a dead letter cannot be redriven.
var ErrNotRedrivable = errors.New("dead letter not redrivable")
