package builtin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/rhizon/rhizon/actor"
)

// MaxIndexedFields bounds the secondary indexes of one document type: each
// one adds a key per document write.
const MaxIndexedFields = 8

// DocumentSpec declares a document actor type: a JSON document store that
// behaves exactly as kv (same verbs, events and replies, under its own name),
// with secondary indexes on the top-level fields Indexes.
type DocumentSpec struct {
	Name    string
	Indexes []string // sorted, unique
}

// DocMarker separates a document type's revision from its index declaration
// in the version it gossips ("2/doc:age;email"): peers compare the part from
// the marker on, since a different set of document types or indexes means
// different decisions and different lists.
const DocMarker = "/doc"

// DocIndexSep separates the indexed fields in a document type's version. Not
// a comma: a node gossips a type's revisions comma-separated, and a field
// cannot contain ';'.
const DocIndexSep = ";"

// Version is the code version a node gossips for the type.
func (s DocumentSpec) Version() string {
	v := Revision + DocMarker
	if len(s.Indexes) > 0 {
		v += ":" + strings.Join(s.Indexes, DocIndexSep)
	}
	return v
}

// ParseDocumentTypes reads one --document-types value. Without a colon it is
// a comma-separated list of type names ("user,invoice"); with one it declares
// a single type and its indexed fields ("user:email,age"). Several
// declarations may be joined with ';' ("user:email,age;invoice").
func ParseDocumentTypes(v string) ([]DocumentSpec, error) {
	var out []DocumentSpec
	for part := range strings.SplitSeq(v, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, fields, hasFields := strings.Cut(part, ":")
		if !hasFields {
			for n := range strings.SplitSeq(part, ",") {
				if n = strings.TrimSpace(n); n != "" {
					out = append(out, DocumentSpec{Name: n})
				}
			}
			continue
		}
		spec := DocumentSpec{Name: strings.TrimSpace(name)}
		for f := range strings.SplitSeq(fields, ",") {
			if f = strings.TrimSpace(f); f != "" {
				spec.Indexes = append(spec.Indexes, f)
			}
		}
		out = append(out, spec)
	}
	return out, nil
}

// CheckDocumentSpecs validates specs (names, fields, duplicates, clashes with
// built-in types) and returns them with sorted indexes, sorted by name.
func CheckDocumentSpecs(specs []DocumentSpec) ([]DocumentSpec, error) {
	builtins := map[string]bool{}
	for _, b := range All() {
		builtins[b.Type()] = true
	}
	seen := map[string]bool{}
	out := make([]DocumentSpec, 0, len(specs))
	for _, s := range specs {
		if err := actor.ValidateID("document type", s.Name); err != nil {
			return nil, fmt.Errorf("document type %q: %w", s.Name, err)
		}
		if strings.Contains(s.Name, ".") {
			return nil, fmt.Errorf("document type %q: a type name cannot contain '.' (it is a part of cmd.<type>.<verb>)", s.Name)
		}
		if builtins[s.Name] {
			return nil, fmt.Errorf("document type %q is a built-in actor type; pick another name", s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("document type %q is declared twice; declare it once with all its indexed fields", s.Name)
		}
		seen[s.Name] = true
		idx := slices.Clone(s.Indexes)
		slices.Sort(idx)
		idx = slices.Compact(idx)
		if len(idx) > MaxIndexedFields {
			return nil, fmt.Errorf("document type %q declares %d indexed fields; the limit is %d", s.Name, len(idx), MaxIndexedFields)
		}
		for _, f := range idx {
			if f == "" || strings.ContainsAny(f, ",;:= <>!\"") || len(f) > 128 {
				return nil, fmt.Errorf("document type %q: indexed field %q must be a top-level JSON key of at most 128 bytes without , ; : = < > ! spaces or quotes", s.Name, f)
			}
		}
		out = append(out, DocumentSpec{Name: s.Name, Indexes: idx})
	}
	slices.SortFunc(out, func(a, b DocumentSpec) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Document returns the behaviour of a declared document type.
func Document(spec DocumentSpec) actor.Behavior {
	return &docBehavior{Behavior: newDocType(spec.Name).define(), version: spec.Version(), indexes: spec.Indexes}
}

// RegistryWith returns a registry holding All and the document types specs
// (checked with CheckDocumentSpecs).
func RegistryWith(specs []DocumentSpec) (*actor.Registry, error) {
	specs, err := CheckDocumentSpecs(specs)
	if err != nil {
		return nil, err
	}
	bs := All()
	for _, s := range specs {
		bs = append(bs, Document(s))
	}
	return actor.NewRegistry(bs...)
}

// listedOnly is the entries of a listed document of a type without indexes,
// shared: callers do not modify what IndexEntries returns.
var listedOnly = []actor.IndexEntry{{Field: actor.ListField}}

// docBehavior adds the Indexer capability (and a version naming the
// indexes) to a document type.
type docBehavior struct {
	actor.Behavior
	version string
	indexes []string
}

func (d *docBehavior) Version() string { return d.version }

// IndexedFields returns the type's indexed fields, sorted.
func (d *docBehavior) IndexedFields() []string { return d.indexes }

func (d *docBehavior) Validate(cmd *actor.Command) error {
	return d.Behavior.(actor.Validator).Validate(cmd)
}

// IndexEntries implements actor.Indexer: the list entry of an existing
// document, then one entry per indexed field holding a JSON scalar (a field
// that is missing, an object or an array is not indexed).
func (d *docBehavior) IndexEntries(state []byte) []actor.IndexEntry {
	if len(state) == 0 {
		return nil
	}
	if len(d.indexes) == 0 {
		// Spare kv's hot path a decode: both encodings of KVState (see
		// encodeKVState) start with the exists field.
		if bytes.HasPrefix(state, []byte(`{"exists":true`)) {
			return listedOnly
		}
		return nil
	}
	var s KVState
	if err := decodeKVState(state, &s); err != nil || !s.Exists {
		return nil
	}
	out := make([]actor.IndexEntry, 1, 1+len(d.indexes))
	out[0] = actor.IndexEntry{Field: actor.ListField}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(s.Doc, &fields); err != nil {
		return out
	}
	for _, f := range d.indexes {
		if v, ok := fields[f]; ok {
			if enc, ok := actor.EncodeIndexValue(v); ok {
				out = append(out, actor.IndexEntry{Field: f, Value: enc})
			}
		}
	}
	return out
}

// Indexes returns the indexed fields of a document type (nil for none), and
// whether b is a document type at all.
func Indexes(b actor.Behavior) ([]string, bool) {
	d, ok := b.(*docBehavior)
	if !ok {
		return nil, false
	}
	return d.indexes, true
}

// DocumentOf returns the document held in a document type's state, or false
// if the state holds none.
func DocumentOf(state []byte) (json.RawMessage, bool) {
	var s KVState
	if len(state) == 0 || decodeKVState(state, &s) != nil || !s.Exists {
		return nil, false
	}
	return s.Doc, true
}
