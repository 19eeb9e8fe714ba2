package builtin

import (
	"bytes"
	"encoding/json"

	"github.com/rhizon/rhizon/actor"
)

// KVType is the actor type of the JSON document store.
const KVType = "kv"

// MaxDocBytes is the largest document kv stores, in canonical form (see
// MergePatch). It leaves room for the rest of KVState within
// actor.MaxStateBytes.
const MaxDocBytes = actor.MaxStateBytes - 64

// KVState is the state of a kv entity. Doc is the document in canonical form
// (see MergePatch), present while Exists.
type KVState struct {
	Exists bool            `json:"exists"`
	Doc    json.RawMessage `json:"doc,omitempty"`
	// canonical says Doc is known to be in canonical form (it came through
	// canonicalValue), so encodeKVState need not scan it again. Whoever sets
	// Doc sets it too; the zero value only costs that scan.
	canonical bool
}

// KVDoc is the payload of evt.kv.created and evt.kv.updated: the whole
// document, in canonical form.
type KVDoc struct {
	Doc json.RawMessage `json:"doc"`
}

// KVPatched is the payload of evt.kv.patched: the merge patch, in canonical
// form. The document after it is MergePatch(before, Patch).
type KVPatched struct {
	Patch json.RawMessage `json:"patch"`
}

type kvDocPayload struct {
	Doc json.RawMessage `json:"doc"`
}

type kvPatchPayload struct {
	Patch json.RawMessage `json:"patch"`
}

type kvEmptyPayload struct{}

// KVDeletedAbsent is the reply of a delete that found no document (never
// created, or deleted already): accepted, with no event.
const KVDeletedAbsent = `{"status":"deleted","existed":false}`

var (
	kvVerbs      = []string{"create", "delete", "get", "patch", "update"}
	evtKVCreated = actor.EventType(KVType, "created")
	evtKVUpdated = actor.EventType(KVType, "updated")
)

// docType is one document actor type: kv, or a type declared by
// configuration (see Document). Its event names are built once.
type docType struct {
	name                                           string
	evtCreated, evtUpdated, evtPatched, evtDeleted string
}

func newDocType(name string) *docType {
	return &docType{
		name:       name,
		evtCreated: actor.EventType(name, "created"),
		evtUpdated: actor.EventType(name, "updated"),
		evtPatched: actor.EventType(name, "patched"),
		evtDeleted: actor.EventType(name, "deleted"),
	}
}

// KV returns the JSON document behaviour. Documents are JSON objects of at
// most MaxDocBytes in canonical form (see MergePatch), which is also the form
// kv stores, emits and replies with.
//
//	cmd.kv.create {"doc": {...}}    -> evt.kv.created {"doc": {...}}
//	  rejects "exists" if the document exists (creating after delete is fine)
//	cmd.kv.update {"doc": {...}}    -> evt.kv.updated {"doc": {...}}  (replaces)
//	  rejects "not_found"
//	cmd.kv.patch  {"patch": {...}}  -> evt.kv.patched {"patch": {...}}  (RFC 7396)
//	  rejects "not_found", "too_large" if the result exceeds MaxDocBytes
//	cmd.kv.delete {} or empty       -> evt.kv.deleted {}
//	  no document: no event, reply KVDeletedAbsent (deleting is idempotent)
//	cmd.kv.get    {} or empty       -> no event; the reply is the document
//	  rejects "not_found"
func KV() actor.Behavior {
	return &docBehavior{Behavior: newDocType(KVType).define(), version: Revision}
}

func (d *docType) define() actor.Behavior {
	return actor.Define(actor.Definition[KVState]{
		Name:     d.name,
		Revision: Revision,
		Commands: map[string]actor.Handler[KVState]{
			"create": d.create,
			"update": d.update,
			"patch":  d.patch,
			"delete": kvDelete,
			"get":    d.get,
		},
		Validate:    d.validate,
		Apply:       d.apply,
		EncodeState: encodeKVState,
		DecodeState: decodeKVState,
	})
}

func (d *docType) validate(cmd *actor.Command) error {
	var err error
	switch cmd.Verb() {
	case "create", "update":
		_, err = parseKVDoc(cmd)
	case "patch":
		_, err = parseKVPatch(cmd)
	case "delete", "get":
		err = parseKVEmpty(cmd)
	default:
		err = unknownVerb(d.name, cmd, kvVerbs)
	}
	return err
}

// parseKVDoc returns the canonical form of the payload's doc.
func parseKVDoc(cmd *actor.Command) ([]byte, error) {
	if doc, ok := fastKVField(cmd.Payload, "doc"); ok {
		return doc, nil
	}
	var p kvDocPayload
	if err := decodePayload(cmd, &p, `{"doc": {"name": "Ada"}}`, false, false); err != nil {
		return nil, err
	}
	return canonicalObject("doc", p.Doc, `{"doc": {"name": "Ada"}}`)
}

// parseKVPatch returns the canonical form of the payload's patch.
func parseKVPatch(cmd *actor.Command) ([]byte, error) {
	if patch, ok := fastKVField(cmd.Payload, "patch"); ok {
		return patch, nil
	}
	var p kvPatchPayload
	if err := decodePayload(cmd, &p, `{"patch": {"name": "Ada", "old_field": null}}`, false, false); err != nil {
		return nil, err
	}
	return canonicalObject("patch", p.Patch, `{"patch": {"name": "Ada", "old_field": null}}`)
}

func parseKVEmpty(cmd *actor.Command) error {
	return decodePayload(cmd, &kvEmptyPayload{}, `{}`, true, false)
}

// canonicalObject checks that raw is a JSON object of at most MaxDocBytes in
// canonical form, and returns that form.
func canonicalObject(field string, raw json.RawMessage, example string) ([]byte, error) {
	raw = trimJSONSpace(raw)
	if len(raw) == 0 {
		return nil, actor.Invalid("%s is required: a JSON object, e.g. %s", field, example)
	}
	if raw[0] != '{' {
		return nil, actor.Invalid("%s must be a JSON object, got %s", field, jsonKind(raw))
	}
	canon, _, err := canonicalJSON(raw)
	if err != nil { // raw was already decoded once, so this is not expected
		return nil, actor.Invalid("%s is not valid JSON: %v", field, err)
	}
	if len(canon) > MaxDocBytes {
		return nil, actor.Invalid("%s is %d bytes in canonical form; the limit is %d", field, len(canon), MaxDocBytes)
	}
	return canon, nil
}

func (d *docType) notFound() error {
	return actor.Reject(actor.CodeNotFound, "document does not exist; send %s first", actor.CommandType(d.name, "create"))
}

func (d *docType) create(_ *actor.Context, s *KVState, cmd *actor.Command) ([]actor.NewEvent, error) {
	doc, err := parseKVDoc(cmd)
	if err != nil {
		return nil, err
	}
	if s.Exists {
		return nil, actor.Reject(actor.CodeExists, "document already exists; use update or patch, or delete it first")
	}
	return []actor.NewEvent{{Name: "created", Payload: kvFieldJSON("doc", doc)}}, nil
}

func (d *docType) update(_ *actor.Context, s *KVState, cmd *actor.Command) ([]actor.NewEvent, error) {
	doc, err := parseKVDoc(cmd)
	if err != nil {
		return nil, err
	}
	if !s.Exists {
		return nil, d.notFound()
	}
	return []actor.NewEvent{{Name: "updated", Payload: kvFieldJSON("doc", doc)}}, nil
}

func (d *docType) patch(_ *actor.Context, s *KVState, cmd *actor.Command) ([]actor.NewEvent, error) {
	patch, err := parseKVPatch(cmd)
	if err != nil {
		return nil, err
	}
	if !s.Exists {
		return nil, d.notFound()
	}
	// Apply the canonical patch, exactly as Evolve will.
	doc, err := MergePatch(s.Doc, patch)
	if err != nil {
		return nil, err
	}
	if len(doc) > MaxDocBytes {
		return nil, actor.Reject(actor.CodeTooLarge, "the patched document would be %d bytes; the limit is %d", len(doc), MaxDocBytes)
	}
	return []actor.NewEvent{{Name: "patched", Payload: kvFieldJSON("patch", patch)}}, nil
}

func kvDelete(ctx *actor.Context, s *KVState, cmd *actor.Command) ([]actor.NewEvent, error) {
	if err := parseKVEmpty(cmd); err != nil {
		return nil, err
	}
	if !s.Exists {
		// Deleting is idempotent: the caller's goal holds, so accept with no
		// event (the version stays) and say so in the reply.
		ctx.Reply([]byte(KVDeletedAbsent))
		return nil, nil
	}
	return []actor.NewEvent{{Name: "deleted", Payload: []byte("{}")}}, nil
}

func (d *docType) get(ctx *actor.Context, s *KVState, cmd *actor.Command) ([]actor.NewEvent, error) {
	if err := parseKVEmpty(cmd); err != nil {
		return nil, err
	}
	if !s.Exists {
		return nil, d.notFound()
	}
	ctx.Reply(s.Doc)
	return nil, nil
}

func (d *docType) apply(s *KVState, ev *actor.Event) error {
	switch ev.Type {
	case d.evtCreated, d.evtUpdated:
		var e KVDoc
		canonical := false
		if doc, ok := fastKVEventField(ev.Payload, "doc"); ok {
			e.Doc, canonical = doc, true
		} else if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		s.Exists, s.Doc, s.canonical = true, e.Doc, canonical
		return nil
	case d.evtPatched:
		var e KVPatched
		if patch, ok := fastKVEventField(ev.Payload, "patch"); ok {
			e.Patch = patch
		} else if err := decodeEvent(ev, &e); err != nil {
			return err
		}
		doc, err := MergePatch(s.Doc, e.Patch)
		if err != nil {
			return err
		}
		s.Doc, s.canonical = doc, false
		return nil
	case d.evtDeleted:
		s.Exists, s.Doc, s.canonical = false, nil, false
		return nil
	}
	return unknownEvent(ev)
}

// The fast paths below give exactly what encoding/json gives, or ok false.

// fastKVField reads a command payload {"<field>": <object>} whose object
// canonScan takes, and returns the object's canonical form.
func fastKVField(payload []byte, field string) ([]byte, bool) {
	sc := jsonScan{b: payload}
	if !sc.byte('{') || !sc.key(field) {
		return nil, false
	}
	sc.skipSpace()
	if sc.i >= len(payload) || payload[sc.i] != '{' {
		return nil, false
	}
	cs := canonScan{jsonScan: jsonScan{b: payload, i: sc.i}}
	canon, ok := cs.value(make([]byte, 0, len(payload)))
	if !ok || len(canon) > MaxDocBytes {
		return nil, false
	}
	sc.i = cs.i
	if !sc.byte('}') || !sc.end() {
		return nil, false
	}
	return canon, true
}

// kvFieldJSON writes what json.Marshal writes for KVDoc or KVPatched holding
// v, a canonical document: encoding/json copies a json.RawMessage compacted
// and HTML-escaped, which leaves a canonical document as it is.
func kvFieldJSON(field string, v []byte) []byte {
	b := make([]byte, 0, len(field)+len(v)+5)
	b = append(b, '{', '"')
	b = append(b, field...)
	b = append(b, '"', ':')
	b = append(b, v...)
	return append(b, '}')
}

// canonicalValue reads the JSON value at sc.i if it is already in canonical
// form, and returns a copy of its bytes (json.Unmarshal copies a RawMessage
// as it appears).
func canonicalValue(sc *jsonScan) ([]byte, bool) {
	sc.skipSpace()
	start := sc.i
	cs := canonScan{jsonScan: jsonScan{b: sc.b, i: start}}
	canon, ok := cs.value(make([]byte, 0, len(sc.b)-start))
	if !ok || !bytes.Equal(canon, sc.b[start:cs.i]) {
		return nil, false
	}
	sc.i = cs.i
	return canon, true
}

// fastKVEventField reads an event payload {"<field>":<canonical object>}.
func fastKVEventField(payload []byte, field string) ([]byte, bool) {
	sc := jsonScan{b: payload}
	if !sc.byte('{') || !sc.key(field) {
		return nil, false
	}
	v, ok := canonicalValue(&sc)
	if !ok || !sc.byte('}') || !sc.end() {
		return nil, false
	}
	return v, true
}

// encodeKVState writes what json.Marshal writes for s when s.Doc is
// canonical (kv stores only canonical documents), and calls it otherwise.
func encodeKVState(s *KVState) ([]byte, error) {
	if len(s.Doc) == 0 {
		if s.Exists {
			return []byte(`{"exists":true}`), nil
		}
		return []byte(`{"exists":false}`), nil
	}
	if !s.canonical {
		if canon, ok := fastCanonical(s.Doc); !ok || !bytes.Equal(canon, s.Doc) {
			return json.Marshal(s)
		}
	}
	b := make([]byte, 0, len(s.Doc)+len(`{"exists":false,"doc":}`))
	if s.Exists {
		b = append(b, `{"exists":true,"doc":`...)
	} else {
		b = append(b, `{"exists":false,"doc":`...)
	}
	b = append(b, s.Doc...)
	return append(b, '}'), nil
}

// decodeKVState reads the two shapes encodeKVState writes.
func decodeKVState(state []byte, s *KVState) error {
	sc := jsonScan{b: state}
	if sc.byte('{') && sc.key("exists") {
		var exists bool
		sc.skipSpace()
		switch {
		case bytes.HasPrefix(state[sc.i:], []byte("true")):
			exists, sc.i = true, sc.i+4
		case bytes.HasPrefix(state[sc.i:], []byte("false")):
			sc.i += 5
		default:
			return json.Unmarshal(state, s)
		}
		if sc.byte('}') && sc.end() {
			s.Exists = exists
			return nil
		}
		if sc.byte(',') && sc.key("doc") {
			if doc, ok := canonicalValue(&sc); ok && sc.byte('}') && sc.end() {
				s.Exists, s.Doc, s.canonical = exists, doc, true
				return nil
			}
		}
	}
	return json.Unmarshal(state, s)
}
