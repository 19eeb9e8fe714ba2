// Command counter is the built-in counter actor (actor/builtin/counter.go)
// written against the WebAssembly SDK: same verbs, events, state encoding and
// rejections, so the two give the same events and state hash. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o counter.wasm ./examples/wasm/counter
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/rhizon/rhizon/actor/wasm/sdk"
)

func init() {
	sdk.Register(sdk.Actor{Verbs: []string{"add"}, Decide: decide, Evolve: evolve})
}

// main is empty: a c-shared (reactor) module only serves its exports.
func main() {}

func decide(_ *sdk.Context, state []byte, cmdType string, payload []byte) ([]sdk.Event, error) {
	// The type is whatever the node loaded the module as (--wasm-actor
	// TYPE=...): "cmd.<type>.add".
	dot := strings.LastIndexByte(cmdType, '.')
	if verb := cmdType[dot+1:]; verb != "add" {
		typ := strings.TrimPrefix(cmdType[:dot], "cmd.")
		return nil, sdk.Invalid("actor type " + strconv.Quote(typ) + " has no verb " + strconv.Quote(verb) + "; verbs: [add]")
	}
	v, err := stateValue(state)
	if err != nil {
		return nil, sdk.Reject("state_decode", "stored counter state does not decode: "+err.Error())
	}
	n, err := amount(cmdType, payload)
	if err != nil {
		return nil, err
	}
	if (n > 0 && v > math.MaxInt64-n) || (n < 0 && v < math.MinInt64-n) {
		return nil, sdk.Reject("overflow", "adding "+strconv.FormatInt(n, 10)+" to "+strconv.FormatInt(v, 10)+
			" leaves the int64 range ["+strconv.FormatInt(math.MinInt64, 10)+", "+strconv.FormatInt(math.MaxInt64, 10)+"]")
	}
	ev := append([]byte(`{"amount":`), strconv.FormatInt(n, 10)...)
	ev = append(append(ev, `,"value":`...), strconv.FormatInt(v+n, 10)...)
	return []sdk.Event{{Name: "added", Payload: append(ev, '}')}}, nil
}

func evolve(_ []byte, eventType string, payload []byte) ([]byte, error) {
	if !strings.HasPrefix(eventType, "evt.") || !strings.HasSuffix(eventType, ".added") {
		return nil, errors.New("builtin: unknown event type " + eventType)
	}
	var e struct {
		Value int64 `json:"value"`
	}
	if v, ok := field(payload, `{"amount":`, `,"value":`); ok {
		e.Value = v
	} else if err := json.Unmarshal(payload, &e); err != nil {
		return nil, errors.New("builtin: payload of " + eventType + ": " + err.Error())
	}
	return append(strconv.AppendInt([]byte(`{"value":`), e.Value, 10), '}'), nil
}

func stateValue(state []byte) (int64, error) {
	if len(state) == 0 {
		return 0, nil
	}
	if v, ok := field(state, `{"value":`, ""); ok {
		return v, nil
	}
	var s struct {
		Value int64 `json:"value"`
	}
	err := json.Unmarshal(state, &s)
	return s.Value, err
}

// field reads the integer after after the prefix pre and skip (skip, when
// set, follows a first integer that is ignored), in the exact shape the
// counter writes; ok is false for anything else.
func field(b []byte, pre, skip string) (int64, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(pre))
	if !ok {
		return 0, false
	}
	if skip != "" {
		i := bytes.Index(rest, []byte(skip))
		if i < 0 {
			return 0, false
		}
		rest = rest[i+len(skip):]
	}
	num, ok := bytes.CutSuffix(rest, []byte("}"))
	if !ok {
		return 0, false
	}
	if len(num) == 0 || num[0] == '+' || (len(num) > 1 && num[0] == '0') || bytes.HasPrefix(num, []byte("-0")) {
		return 0, false // not the shape encoding/json writes
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	return v, err == nil
}

func amount(cmdType string, payload []byte) (int64, error) {
	if n, ok := field(payload, `{"amount":`, ""); ok && n != 0 {
		return n, nil
	}
	// The messages are the built-in counter's (actor/builtin/payload.go).
	const example = `{"amount": 1}`
	p := bytes.Trim(payload, " \t\r\n")
	if len(p) == 0 {
		return 0, sdk.Invalid(cmdType + " needs a JSON object payload like " + example)
	}
	if p[0] != '{' {
		return 0, sdk.Invalid(cmdType + " payload must be a JSON object like " + example + ", got " + jsonKind(p))
	}
	var body struct {
		Amount *int64 `json:"amount"`
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return 0, sdk.Invalid("amount must be an integer (no fraction, no quotes) within the signed 64-bit range, got " + te.Value)
		case errors.As(err, &se):
			return 0, sdk.Invalid(cmdType + " payload is not valid JSON: " + se.Error() + " (at byte " + strconv.FormatInt(se.Offset, 10) + ")")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return 0, sdk.Invalid(cmdType + " payload is not valid JSON: it ends before the object is closed")
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return 0, sdk.Invalid("unknown field " + name + "; " + cmdType + ` accepts only "amount" (like ` + example + ")")
		}
		return 0, sdk.Invalid(cmdType + " payload: " + err.Error())
	}
	if off := dec.InputOffset(); len(bytes.Trim(p[off:], " \t\r\n")) != 0 {
		return 0, sdk.Invalid(cmdType + " payload has data after the JSON object (at byte " + strconv.FormatInt(off, 10) + "); send exactly one object like " + example)
	}
	if body.Amount == nil {
		return 0, sdk.Invalid(`amount is required: a non-zero integer, e.g. {"amount": 1} or {"amount": -1}`)
	}
	if *body.Amount == 0 {
		return 0, sdk.Invalid("amount must be a non-zero integer, got 0")
	}
	return *body.Amount, nil
}

func jsonKind(b []byte) string {
	switch b[0] {
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
