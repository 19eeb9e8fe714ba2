package builtin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// MergePatch applies patch, an RFC 7396 JSON merge patch, to doc and returns
// the result in canonical form. Both must be JSON objects (an empty doc is
// taken as {}).
//
// Members of patch are applied in order: null removes the key, an object is
// merged recursively into the target's member (replacing it first with {} if
// it is not an object), and anything else (arrays included) replaces the
// member. Numbers keep their exact text (no float rounding). A patch with a
// duplicate key applies each occurrence in turn; kv passes only canonical
// patches, in which the last occurrence has already won.
//
// The canonical form is what encoding/json's Marshal writes for the decoded
// document: compact, object keys sorted, duplicate keys resolved last-wins,
// and <, > and & in strings escaped as \u003c, \u003e and \u0026. It is a
// pure function of its inputs.
func MergePatch(doc, patch []byte) ([]byte, error) {
	target := map[string]any{}
	if len(trimJSONSpace(doc)) != 0 {
		v, err := decodeJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document: %w", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("document must be a JSON object, got %s", jsonKind(trimJSONSpace(doc)))
		}
		target = m
	}
	p, err := decodeOrdered(patch)
	if err != nil {
		return nil, fmt.Errorf("patch: %w", err)
	}
	po, ok := p.(orderedObject)
	if !ok {
		return nil, fmt.Errorf("patch must be a JSON object, got %s", jsonKind(trimJSONSpace(patch)))
	}
	mergeInto(target, po)
	return json.Marshal(target)
}

// canonicalJSON returns the canonical form (see MergePatch) of one JSON value
// and the decoded value.
func canonicalJSON(b []byte) ([]byte, any, error) {
	v, err := decodeJSON(b)
	if err != nil {
		return nil, nil, err
	}
	out, err := json.Marshal(v)
	return out, v, err
}

// decodeJSON decodes exactly one JSON value, keeping numbers as json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if len(trimJSONSpace(b[dec.InputOffset():])) != 0 {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// member is one key/value pair of an orderedObject.
type member struct {
	key string
	val any
}

// orderedObject is a JSON object decoded with its members in document order,
// so that applying a patch never ranges over a map.
type orderedObject []member

// decodeOrdered decodes exactly one JSON value: objects become orderedObject,
// arrays []any, numbers json.Number, and the rest string, bool or nil.
func decodeOrdered(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := readOrdered(dec)
	if err != nil {
		return nil, err
	}
	if len(trimJSONSpace(b[dec.InputOffset():])) != 0 {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

func readOrdered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	switch d {
	case '{':
		obj := orderedObject{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := kt.(string) // the decoder only yields string keys here
			v, err := readOrdered(dec)
			if err != nil {
				return nil, err
			}
			obj = append(obj, member{key: key, val: v})
		}
		if _, err := dec.Token(); err != nil { // '}'
			return nil, err
		}
		return obj, nil
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := readOrdered(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return nil, err
		}
		return arr, nil
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

// mergeInto applies patch to target in place (RFC 7396 MergePatch).
func mergeInto(target map[string]any, patch orderedObject) {
	for _, m := range patch {
		switch v := m.val.(type) {
		case nil:
			delete(target, m.key)
		case orderedObject:
			sub, ok := target[m.key].(map[string]any)
			if !ok {
				sub = map[string]any{}
			}
			mergeInto(sub, v)
			target[m.key] = sub
		default:
			target[m.key] = plain(v)
		}
	}
}

// plain turns a value from decodeOrdered into what encoding/json decodes to
// (objects as maps, later duplicate keys winning), keeping nulls: inside a
// replaced value, null is a value, not a deletion.
func plain(v any) any {
	switch v := v.(type) {
	case orderedObject:
		m := make(map[string]any, len(v))
		for _, mm := range v {
			m[mm.key] = plain(mm.val)
		}
		return m
	case []any:
		out := make([]any, len(v))
		for i := range v {
			out[i] = plain(v[i])
		}
		return out
	}
	return v
}
