package builtin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"

	"github.com/rhizon/rhizon/actor"
)

// decodePayload decodes cmd.Payload, which must be exactly one JSON object,
// into v (a pointer to a struct). Unknown fields are refused unless lenient.
// An empty payload means {} when emptyOK; otherwise it is refused. example is
// a valid payload shown in the messages.
//
// Unlike actor.DecodePayload, it also refuses a top-level null and any
// trailing bytes, and its messages name the field and what it must be.
func decodePayload(cmd *actor.Command, v any, example string, emptyOK, lenient bool) error {
	p := trimJSONSpace(cmd.Payload)
	if len(p) == 0 {
		if emptyOK {
			return nil
		}
		return actor.Invalid("%s needs a JSON object payload like %s", cmd.Type, example)
	}
	if p[0] != '{' {
		return actor.Invalid("%s payload must be a JSON object like %s, got %s", cmd.Type, example, jsonKind(p))
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	if !lenient {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return explainDecodeError(cmd, err, v, example)
	}
	if off := dec.InputOffset(); len(trimJSONSpace(p[off:])) != 0 {
		return actor.Invalid("%s payload has data after the JSON object (at byte %d); send exactly one object like %s", cmd.Type, off, example)
	}
	return nil
}

func explainDecodeError(cmd *actor.Command, err error, v any, example string) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "payload"
		}
		return actor.Invalid("%s must be %s, got %s", field, describeType(te.Type), te.Value)
	case errors.As(err, &se):
		return actor.Invalid("%s payload is not valid JSON: %v (at byte %d)", cmd.Type, se, se.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return actor.Invalid("%s payload is not valid JSON: it ends before the object is closed", cmd.Type)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		fields := fieldList(v)
		if fields == "" {
			return actor.Invalid("unknown field %s; %s takes no fields: send {} or an empty payload", name, cmd.Type)
		}
		return actor.Invalid("unknown field %s; %s accepts only %s (like %s)", name, cmd.Type, fields, example)
	}
	return actor.Invalid("%s payload: %v", cmd.Type, err)
}

// describeType says, for a message, what JSON value a Go type accepts.
func describeType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer (no fraction, no quotes) within the signed 64-bit range"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer within the unsigned 64-bit range"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	}
	return "a " + t.String()
}

// fieldList names the JSON fields of the struct v points to, in declaration
// order, e.g. `"amount"` or `"owner", "ttl_ms"`; "" if it has none.
func fieldList(v any) string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return "the documented fields"
	}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		names = append(names, `"`+name+`"`)
	}
	return strings.Join(names, ", ")
}

// jsonKind names the kind of the JSON value that starts b (b is trimmed).
func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	}
	return "something that is not JSON"
}

// trimJSONSpace removes JSON whitespace (space, tab, CR, LF) at both ends.
func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// decodeEvent decodes the JSON payload of an event the type itself emitted.
func decodeEvent(ev *actor.Event, v any) error {
	if err := json.Unmarshal(ev.Payload, v); err != nil {
		return errors.New("builtin: payload of " + ev.Type + ": " + err.Error())
	}
	return nil
}

func unknownEvent(ev *actor.Event) error {
	return errors.New("builtin: unknown event type " + ev.Type)
}
