package engine

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/recordv1"
)

// Hand-written encodings of the two records every accepted command writes,
// recordv1.Event and recordv1.Result, which proto.Marshal spent most of the engine's own
// time on (reflection over fresh message copies, and each event marshalled a
// second time inside its result). They give exactly the bytes of the
// deterministic proto.Marshal of recordv1.FromEvent / recordv1.FromResult, which are
// stored and hashed: proto3 fields in field-number order, zero scalars and
// empty strings and bytes left out, the (always present) address and
// principal messages written even when empty. A string that is not valid
// UTF-8, which proto.Marshal refuses, goes to mustMarshal, which fails as
// before. encode_test.go compares both on random records.

const lenType = protowire.BytesType

func sizeString(s string) int {
	if s == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(s)) // every field number here is < 16: a 1-byte tag
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, lenType), s)
}

func sizeBytes(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	return 1 + protowire.SizeBytes(len(v))
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return protowire.AppendBytes(protowire.AppendTag(b, num, lenType), v)
}

func sizeVarint(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func sizeAddress(a *actor.Address) int {
	return sizeString(a.Tenant) + sizeString(a.Workspace) + sizeString(a.ActorType) + sizeString(a.EntityID)
}

func sizePrincipal(p *actor.Principal) int { return sizeString(p.ID) + sizeString(string(p.Type)) }

func eventStringsValid(ev *actor.Event) bool {
	for _, s := range [...]string{ev.ID, ev.Type, ev.Address.Tenant, ev.Address.Workspace, ev.Address.ActorType,
		ev.Address.EntityID, ev.CommandID, ev.CausationID, ev.CorrelationID, ev.TraceParent,
		ev.Principal.ID, string(ev.Principal.Type)} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// sizeEvent is the length of the encoding of ev.
func sizeEvent(ev *actor.Event) int {
	return sizeString(ev.ID) + sizeString(ev.Type) + 1 + protowire.SizeBytes(sizeAddress(&ev.Address)) +
		sizeVarint(ev.Version) + sizeBytes(ev.Payload) + sizeVarint(uint64(ev.At)) +
		sizeString(ev.CommandID) + sizeString(ev.CausationID) + sizeString(ev.CorrelationID) +
		sizeString(ev.TraceParent) + 1 + protowire.SizeBytes(sizePrincipal(&ev.Principal)) +
		sizeVarint(uint64(ev.Shard)) + sizeVarint(ev.Index) + sizeVarint(uint64(ev.Ordinal)) +
		sizeVarint(uint64(ev.SchemaVersion))
}

// appendEvent appends the encoding of recordv1.FromEvent(ev).
func appendEvent(b []byte, ev *actor.Event) []byte {
	if !eventStringsValid(ev) {
		return append(b, mustMarshal(recordv1.FromEvent(ev))...)
	}
	b = appendString(b, 1, ev.ID)
	b = appendString(b, 2, ev.Type)
	b = protowire.AppendTag(b, 3, lenType)
	b = protowire.AppendVarint(b, uint64(sizeAddress(&ev.Address)))
	b = appendString(b, 1, ev.Address.Tenant)
	b = appendString(b, 2, ev.Address.Workspace)
	b = appendString(b, 3, ev.Address.ActorType)
	b = appendString(b, 4, ev.Address.EntityID)
	b = appendVarint(b, 4, ev.Version)
	b = appendBytes(b, 5, ev.Payload)
	b = appendVarint(b, 6, uint64(ev.At))
	b = appendString(b, 7, ev.CommandID)
	b = appendString(b, 8, ev.CausationID)
	b = appendString(b, 9, ev.CorrelationID)
	b = appendString(b, 10, ev.TraceParent)
	b = protowire.AppendTag(b, 11, lenType)
	b = protowire.AppendVarint(b, uint64(sizePrincipal(&ev.Principal)))
	b = appendString(b, 1, ev.Principal.ID)
	b = appendString(b, 2, string(ev.Principal.Type))
	b = appendVarint(b, 12, uint64(ev.Shard))
	b = appendVarint(b, 13, ev.Index)
	b = appendVarint(b, 14, uint64(ev.Ordinal))
	// 0 (version 1) is left out like every zero field: the bytes of events
	// recorded before schema versions existed are unchanged.
	return appendVarint(b, 15, uint64(ev.SchemaVersion))
}

// encodeResult returns the encoding of recordv1.FromResult(res). events, when not
// nil, holds the encoding of each of res.Events (as appendEvent wrote them).
func encodeResult(res *actor.Result, events [][]byte) []byte {
	if !utf8.ValidString(res.CommandID) || !utf8.ValidString(res.Code) || !utf8.ValidString(res.Message) {
		return mustMarshal(recordv1.FromResult(res))
	}
	if len(events) != len(res.Events) {
		events = make([][]byte, len(res.Events))
		for i := range res.Events {
			events[i] = appendEvent(make([]byte, 0, sizeEvent(&res.Events[i])), &res.Events[i])
		}
	}
	n, _ := resultSize(res, events)
	return appendResult(make([]byte, 0, n), res, events)
}

// resultSize is the length of encodeResult(res, events), and false when
// encodeResult would take another path: a string that is not valid UTF-8, or
// events that are not res.Events' encodings.
func resultSize(res *actor.Result, events [][]byte) (int, bool) {
	if !utf8.ValidString(res.CommandID) || !utf8.ValidString(res.Code) || !utf8.ValidString(res.Message) ||
		len(events) != len(res.Events) {
		return 0, false
	}
	n := sizeString(res.CommandID) + sizeVarint(uint64(int64(res.Status))) + sizeVarint(uint64(int64(res.Reason))) +
		sizeString(res.Code) + sizeString(res.Message) + sizeVarint(res.Version) +
		sizeVarint(res.Index) + sizeBytes(res.Reply)
	if res.Duplicate {
		n += 2
	}
	if res.Replay {
		n += 2
	}
	for _, e := range events {
		n += 1 + protowire.SizeBytes(len(e))
	}
	return n, true
}

// appendResult appends encodeResult(res, events) to b; events must be the
// encodings of res.Events and res's strings valid UTF-8 (resultSize).
func appendResult(b []byte, res *actor.Result, events [][]byte) []byte {
	b = appendString(b, 1, res.CommandID)
	b = appendVarint(b, 2, uint64(int64(res.Status))) // enums are int32, sign-extended
	b = appendVarint(b, 3, uint64(int64(res.Reason)))
	b = appendString(b, 4, res.Code)
	b = appendString(b, 5, res.Message)
	b = appendVarint(b, 6, res.Version)
	for _, e := range events {
		b = protowire.AppendBytes(protowire.AppendTag(b, 7, lenType), e)
	}
	b = appendVarint(b, 8, res.Index)
	if res.Duplicate {
		b = appendVarint(b, 9, 1)
	}
	b = appendBytes(b, 10, res.Reply)
	if res.Replay {
		b = appendVarint(b, 11, 1)
	}
	return b
}
