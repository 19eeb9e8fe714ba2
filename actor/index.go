package actor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// ListField is the IndexEntry field of the list entry: every document that
// exists has one, with an empty value, so List reads ids in order without
// touching the states.
const ListField = ""

// IndexEntry is one secondary-index entry of an entity: a field and its
// value in the ordered encoding of EncodeIndexValue.
type IndexEntry struct {
	Field string
	Value []byte
}

// Indexer is an optional Behavior capability of document types: the index
// entries of an entity's state. The engine writes the difference between
// the entries of the old and new state in the same store batch as the state,
// so the indexes are a pure function of the states (which the state hash
// covers). IndexEntries must be deterministic, return entries sorted by
// field, and return none for a state that is not a listed document. Callers
// must not modify the entries it returns.
type Indexer interface {
	IndexEntries(state []byte) []IndexEntry
}

// Index value tags. They order JSON kinds null < false < true < numbers <
// strings and are stored on disk: never renumber them.
const (
	ixNull   byte = 0x01
	ixFalse  byte = 0x02
	ixTrue   byte = 0x03
	ixNumber byte = 0x04
	ixString byte = 0x05
)

// EncodeIndexValue returns the ordered, self-delimiting encoding of a JSON
// scalar: byte order of encodings is the order of values (null, false, true,
// numbers as float64, strings by bytes), and no encoding is a prefix of
// another, so an entity id can follow it in a key. Objects and arrays are
// not indexed (ok false).
func EncodeIndexValue(raw json.RawMessage) ([]byte, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, false
	}
	switch raw[0] {
	case 'n':
		return []byte{ixNull}, string(raw) == "null"
	case 't':
		return []byte{ixTrue}, string(raw) == "true"
	case 'f':
		return []byte{ixFalse}, string(raw) == "false"
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false
		}
		return encodeIndexString(s), true
	case '{', '[':
		return nil, false
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) {
		return nil, false
	}
	return encodeIndexNumber(f), true
}

func encodeIndexNumber(f float64) []byte {
	if f == 0 {
		f = 0 // -0 and 0 are one value
	}
	u := math.Float64bits(f)
	if u&(1<<63) != 0 {
		u = ^u // negative: reverse the order of magnitudes
	} else {
		u |= 1 << 63
	}
	return binary.BigEndian.AppendUint64([]byte{ixNumber}, u)
}

// encodeIndexString escapes 0x00 as 0x00 0xFF and ends with 0x00 0x01, which
// keeps byte order and makes the end unambiguous.
func encodeIndexString(s string) []byte {
	b := make([]byte, 0, len(s)+3)
	b = append(b, ixString)
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			b = append(b, 0, 0xFF)
			continue
		}
		b = append(b, s[i])
	}
	return append(b, 0, 1)
}

// IndexValueLen returns the length of the encoded value at the start of b,
// or -1 if b does not start with one.
func IndexValueLen(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	switch b[0] {
	case ixNull, ixFalse, ixTrue:
		return 1
	case ixNumber:
		if len(b) < 9 {
			return -1
		}
		return 9
	case ixString:
		for i := 1; i+1 < len(b); i++ {
			if b[i] != 0 {
				continue
			}
			if b[i+1] == 1 {
				return i + 2
			}
			i++ // 0x00 0xFF: an escaped NUL
		}
	}
	return -1
}

// DecodeIndexValue turns an encoded value back into JSON.
func DecodeIndexValue(b []byte) (json.RawMessage, error) {
	if IndexValueLen(b) != len(b) {
		return nil, fmt.Errorf("actor: corrupt index value %x", b)
	}
	switch b[0] {
	case ixNull:
		return json.RawMessage("null"), nil
	case ixFalse:
		return json.RawMessage("false"), nil
	case ixTrue:
		return json.RawMessage("true"), nil
	case ixNumber:
		u := binary.BigEndian.Uint64(b[1:])
		if u&(1<<63) != 0 {
			u &^= 1 << 63
		} else {
			u = ^u
		}
		return json.Marshal(math.Float64frombits(u))
	}
	s := make([]byte, 0, len(b))
	for i := 1; i < len(b)-2; i++ {
		s = append(s, b[i])
		if b[i] == 0 {
			i++
		}
	}
	return json.Marshal(string(s))
}

// AppendIndexScope appends the prefix every index key of one field of one
// document type in one workspace shares: tenant, workspace, type and field,
// each with a 2-byte length, so no scope is a prefix of another.
func AppendIndexScope(b []byte, tenant, workspace, actorType, field string) []byte {
	for _, p := range [...]string{tenant, workspace, actorType, field} {
		b = append(b, byte(len(p)>>8), byte(len(p)))
		b = append(b, p...)
	}
	return b
}

// AppendIndexKey appends the index key of entry e of addr: its scope, the
// encoded value, then the entity id, so keys sort by (value, id).
func AppendIndexKey(b []byte, addr Address, e IndexEntry) []byte {
	b = AppendIndexScope(b, addr.Tenant, addr.Workspace, addr.ActorType, e.Field)
	b = append(b, e.Value...)
	return append(b, addr.EntityID...)
}

// SplitIndexTail splits what follows a scope in an index key into the
// encoded value and the entity id; list entries (ListField) have no value.
func SplitIndexTail(field string, tail []byte) (value []byte, id string, ok bool) {
	if field == ListField {
		return nil, string(tail), len(tail) > 0
	}
	n := IndexValueLen(tail)
	if n < 0 || n == len(tail) {
		return nil, "", false
	}
	return tail[:n], string(tail[n:]), true
}

// IndexQuery selects the entries of one field's index (ListField: the list
// of existing documents) of one document type in one workspace.
type IndexQuery struct {
	Tenant, Workspace, ActorType, Field string
	// Lo and Hi bound the encoded value (nil: unbounded); the Excl flags
	// leave the bound itself out.
	Lo, Hi         []byte
	LoExcl, HiExcl bool
	// Prefix keeps the entity ids that start with it.
	Prefix string
	// After is the key tail (value, then id) of the last entry of the
	// previous page: the page starts after it. Nil starts at the beginning.
	After []byte
	Limit int
	// MaxBytes, if positive, ends the page after the item whose state
	// reaches it (a page always holds one item, so it makes progress).
	MaxBytes int
}

// Match reports whether an entry (encoded value, id) is selected by q's
// bounds and prefix, and whether no entry after it in key order can be.
func (q *IndexQuery) Match(value []byte, id string) (in, stop bool) {
	if q.Field == ListField {
		// The scan starts at the prefix, so the first id without it is past it.
		if !strings.HasPrefix(id, q.Prefix) {
			return false, id > q.Prefix
		}
		return true, false
	}
	if q.Lo != nil {
		if c := bytes.Compare(value, q.Lo); c < 0 || (c == 0 && q.LoExcl) {
			return false, false
		}
	}
	if q.Hi != nil {
		if c := bytes.Compare(value, q.Hi); c > 0 || (c == 0 && q.HiExcl) {
			return false, true
		}
	}
	return strings.HasPrefix(id, q.Prefix), false
}

// Tail is the key tail of an entry (value, then id): what After holds.
func IndexTail(value []byte, id string) []byte {
	return append(bytes.Clone(value), id...)
}
