package builtin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

func TestKV(t *testing.T) {
	runCases(t, KV, []tcase{
		{"lifecycle", []step{
			{verb: "get", payload: ``, code: "not_found", msg: "document does not exist; send cmd.kv.create first"},
			{verb: "create", payload: `{"doc": {"name": "Ada", "age": 36}}`,
				events: []string{`created {"doc":{"age":36,"name":"Ada"}}`},
				state:  `{"exists":true,"doc":{"age":36,"name":"Ada"}}`},
			{verb: "get", payload: `{}`, reply: `{"age":36,"name":"Ada"}`},
			{verb: "get", payload: ``, reply: `{"age":36,"name":"Ada"}`},
			{verb: "create", payload: `{"doc":{}}`, code: "exists", msg: "document already exists"},
			{verb: "update", payload: `{"doc":{"name":"Grace"}}`,
				events: []string{`updated {"doc":{"name":"Grace"}}`},
				state:  `{"exists":true,"doc":{"name":"Grace"}}`},
			{verb: "patch", payload: `{"patch":{"born":1906,"name":null}}`,
				events: []string{`patched {"patch":{"born":1906,"name":null}}`},
				state:  `{"exists":true,"doc":{"born":1906}}`},
			{verb: "get", payload: `{}`, reply: `{"born":1906}`},
			{verb: "delete", payload: ``, events: []string{`deleted {}`}, state: `{"exists":false}`},
			{verb: "get", payload: `{}`, code: "not_found", msg: "does not exist"},
			// Deleting again is idempotent: accepted, no event, the reply says so.
			{verb: "delete", payload: `{}`, reply: `{"status":"deleted","existed":false}`, state: `{"exists":false}`},
			{verb: "update", payload: `{"doc":{}}`, code: "not_found", msg: "does not exist"},
			{verb: "patch", payload: `{"patch":{}}`, code: "not_found", msg: "does not exist"},
			{verb: "create", payload: `{"doc":{"v":2}}`,
				events: []string{`created {"doc":{"v":2}}`}, state: `{"exists":true,"doc":{"v":2}}`},
			{verb: "delete", payload: ` {} `, events: []string{`deleted {}`}},
		}},
		{"never created", []step{
			{verb: "update", payload: `{"doc":{"a":1}}`, code: "not_found", msg: "does not exist"},
			{verb: "patch", payload: `{"patch":{"a":1}}`, code: "not_found", msg: "does not exist"},
			{verb: "delete", payload: ``, reply: `{"status":"deleted","existed":false}`},
		}},
		{"canonical form", []step{
			// Keys sorted, whitespace dropped, duplicates last-wins, numbers
			// kept exactly, <>& escaped as encoding/json does.
			{verb: "create", payload: "{\"doc\": {\"z\": 1.10, \"a\": [3, 2, 1], \"big\": 123456789012345678901234567890,\n \"dup\": 1, \"dup\": 2, \"html\": \"<a & b>\", \"e\": 1e400, \"u\": \"\\u00e9\"}}",
				events: []string{`created {"doc":{"a":[3,2,1],"big":123456789012345678901234567890,"dup":2,"e":1e400,"html":"\u003ca \u0026 b\u003e","u":"é","z":1.10}}`},
				state:  `{"exists":true,"doc":{"a":[3,2,1],"big":123456789012345678901234567890,"dup":2,"e":1e400,"html":"\u003ca \u0026 b\u003e","u":"é","z":1.10}}`},
			{verb: "get", payload: ``, reply: `{"a":[3,2,1],"big":123456789012345678901234567890,"dup":2,"e":1e400,"html":"\u003ca \u0026 b\u003e","u":"é","z":1.10}`},
			{verb: "patch", payload: `{"patch":{"z":1.100,"big":null}}`,
				events: []string{`patched {"patch":{"big":null,"z":1.100}}`},
				state:  `{"exists":true,"doc":{"a":[3,2,1],"dup":2,"e":1e400,"html":"\u003ca \u0026 b\u003e","u":"é","z":1.100}}`},
		}},
		{"merge patch", []step{
			{verb: "create", payload: `{"doc":{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},"tags":["example","sample"],"content":"This will be unchanged"}}`,
				events: []string{`created {"doc":{"author":{"familyName":"Doe","givenName":"John"},"content":"This will be unchanged","tags":["example","sample"],"title":"Goodbye!"}}`}},
			// The example of RFC 7396 section 3.
			{verb: "patch", payload: `{"patch":{"title":"Hello!","phoneNumber":"+01-123-456-7890","author":{"familyName":null},"tags":["example"]}}`,
				events: []string{`patched {"patch":{"author":{"familyName":null},"phoneNumber":"+01-123-456-7890","tags":["example"],"title":"Hello!"}}`},
				state:  `{"exists":true,"doc":{"author":{"givenName":"John"},"content":"This will be unchanged","phoneNumber":"+01-123-456-7890","tags":["example"],"title":"Hello!"}}`},
			// Nested merge creates intermediate objects and drops nulls in them.
			{verb: "patch", payload: `{"patch":{"author":{"address":{"city":"Paris","zip":null}},"meta":{"a":{"b":null}}}}`,
				state:  `{"exists":true,"doc":{"author":{"address":{"city":"Paris"},"givenName":"John"},"content":"This will be unchanged","meta":{"a":{}},"phoneNumber":"+01-123-456-7890","tags":["example"],"title":"Hello!"}}`,
				events: []string{`patched {"patch":{"author":{"address":{"city":"Paris","zip":null}},"meta":{"a":{"b":null}}}}`}},
			// An object replaces a non-object; arrays are replaced whole, nulls inside them kept.
			{verb: "patch", payload: `{"patch":{"title":{"en":"Hello"},"tags":[{"x":null},null,[1]],"author":null,"content":null,"phoneNumber":null,"meta":null}}`,
				state:  `{"exists":true,"doc":{"tags":[{"x":null},null,[1]],"title":{"en":"Hello"}}}`,
				events: []string{`patched {"patch":{"author":null,"content":null,"meta":null,"phoneNumber":null,"tags":[{"x":null},null,[1]],"title":{"en":"Hello"}}}`}},
			// Deleting an absent key and an empty patch are accepted no-ops.
			{verb: "patch", payload: `{"patch":{"nope":null}}`,
				events: []string{`patched {"patch":{"nope":null}}`}, state: `{"exists":true,"doc":{"tags":[{"x":null},null,[1]],"title":{"en":"Hello"}}}`},
			{verb: "patch", payload: `{"patch":{}}`,
				events: []string{`patched {"patch":{}}`}, state: `{"exists":true,"doc":{"tags":[{"x":null},null,[1]],"title":{"en":"Hello"}}}`},
			// A scalar replaces an object.
			{verb: "patch", payload: `{"patch":{"title":"plain"}}`, state: `{"exists":true,"doc":{"tags":[{"x":null},null,[1]],"title":"plain"}}`,
				events: []string{`patched {"patch":{"title":"plain"}}`}},
			{verb: "get", payload: `{}`, reply: `{"tags":[{"x":null},null,[1]],"title":"plain"}`},
		}},
		{"duplicate keys in a patch resolve last-wins", []step{
			{verb: "create", payload: `{"doc":{"a":{"x":1,"y":2}}}`, events: []string{`created {"doc":{"a":{"x":1,"y":2}}}`}},
			{verb: "patch", payload: `{"patch":{"a":null,"a":{"x":3}}}`,
				events: []string{`patched {"patch":{"a":{"x":3}}}`}, state: `{"exists":true,"doc":{"a":{"x":3,"y":2}}}`},
		}},
	})
}

// A second delete answers like the first as far as the caller's goal goes
// (accepted, the document is gone) but records nothing: no event, the same
// version and state.
func TestKVDeleteIdempotent(t *testing.T) {
	e := newEntity(KV())
	e.check(t, 0, step{verb: "create", payload: `{"doc":{"a":1}}`, events: []string{`created {"doc":{"a":1}}`}})
	e.check(t, 1, step{verb: "delete", payload: `{}`, events: []string{`deleted {}`}, state: `{"exists":false}`})
	for i := 2; i < 5; i++ {
		e.check(t, i, step{verb: "delete", payload: `{}`, reply: `{"status":"deleted","existed":false}`, state: `{"exists":false}`})
		if e.version != 2 || len(e.log) != 2 {
			t.Fatalf("delete %d: version %d with %d events, want 2 and 2", i, e.version, len(e.log))
		}
	}
	e.check(t, 5, step{verb: "create", payload: `{"doc":{"b":2}}`, events: []string{`created {"doc":{"b":2}}`}})
}

func TestKVInvalid(t *testing.T) {
	for _, tc := range []struct{ verb, payload, msg string }{
		{"create", ``, `cmd.kv.create needs a JSON object payload like {"doc": {"name": "Ada"}}`},
		{"create", `{}`, `doc is required: a JSON object, e.g. {"doc": {"name": "Ada"}}`},
		{"create", `{"doc":null}`, `doc must be a JSON object, got null`},
		{"create", `{"doc":[1,2]}`, `doc must be a JSON object, got an array`},
		{"create", `{"doc":"x"}`, `doc must be a JSON object, got a string`},
		{"create", `{"doc":3}`, `doc must be a JSON object, got a number`},
		{"create", `{"doc":{},"id":"x"}`, `unknown field "id"; cmd.kv.create accepts only "doc"`},
		{"create", `{"doc":{"a":}}`, `not valid JSON`},
		{"update", `{"doc":true}`, `doc must be a JSON object, got a boolean`},
		{"update", `{"patch":{}}`, `unknown field "patch"; cmd.kv.update accepts only "doc"`},
		{"patch", `{}`, `patch is required: a JSON object`},
		{"patch", `{"patch":null}`, `patch must be a JSON object, got null`},
		{"patch", `{"patch":[{"op":"add"}]}`, `patch must be a JSON object, got an array`},
		{"patch", `{"doc":{}}`, `unknown field "doc"; cmd.kv.patch accepts only "patch"`},
		{"delete", `{"force":true}`, `unknown field "force"; cmd.kv.delete takes no fields: send {} or an empty payload`},
		{"delete", `null`, `cmd.kv.delete payload must be a JSON object like {}, got null`},
		{"get", `[]`, `got an array`},
		{"get", `{"path":"a"}`, `unknown field "path"`},
		{"list", ``, `actor type "kv" has no verb "list"; verbs: [create delete get patch update]`},
	} {
		t.Run(tc.verb+" "+tc.payload, func(t *testing.T) {
			e := newEntity(KV())
			e.check(t, 0, step{verb: tc.verb, payload: tc.payload, code: "invalid", msg: tc.msg})
		})
	}
}

// bigMember returns the JSON member "key":"ccc..." with n bytes of c.
func bigMember(key string, c byte, n int) string {
	return `"` + key + `":"` + strings.Repeat(string(c), n) + `"`
}

func TestKVSizeLimit(t *testing.T) {
	// '<' is escaped as \u003c (6 bytes) in canonical form, so a payload under
	// actor.MaxPayloadBytes can exceed MaxDocBytes.
	e := newEntity(KV())
	e.check(t, 0, step{verb: "create", payload: `{"doc":{` + bigMember("a", '<', 800_000) + `}}`,
		code: "invalid", msg: "doc is 4800008 bytes in canonical form; the limit is 4194240"})

	// Grow a document with patches (each payload under 1 MiB) to exactly
	// MaxDocBytes: {"a":"x..","b":"x..","c":"x..","d":"x..","e":"x.."}.
	const m = 1_000_000
	e.check(t, 1, step{verb: "create", payload: `{"doc":{` + bigMember("a", 'x', m) + `}}`,
		events: []string{`created {"doc":{` + bigMember("a", 'x', m) + `}}`}})
	for i, k := range []string{"b", "c", "d"} {
		e.check(t, 2+i, step{verb: "patch", payload: `{"patch":{` + bigMember(k, 'x', m) + `}}`,
			events: []string{`patched {"patch":{` + bigMember(k, 'x', m) + `}}`}})
	}
	sizeWithoutE := len(`{}`) + 4*len(`"a":"`+`"`) + 4*m + 3 // 3 commas
	n := MaxDocBytes - sizeWithoutE - len(`,"e":""`)
	before := string(e.state)
	e.check(t, 5, step{verb: "patch", payload: `{"patch":{` + bigMember("e", 'x', n+1) + `}}`,
		code: "too_large", msg: fmt.Sprintf("the patched document would be %d bytes; the limit is %d", MaxDocBytes+1, MaxDocBytes)})
	if string(e.state) != before {
		t.Fatal("a rejected patch changed the state")
	}
	e.check(t, 6, step{verb: "patch", payload: `{"patch":{` + bigMember("e", 'x', n) + `}}`,
		events: []string{`patched {"patch":{` + bigMember("e", 'x', n) + `}}`}})
	out := e.exec(t, 0, "get", ``)
	if len(out.reply) != MaxDocBytes {
		t.Fatalf("document is %d bytes, want exactly MaxDocBytes %d", len(out.reply), MaxDocBytes)
	}
	if len(e.state) > actor.MaxStateBytes {
		t.Fatalf("state is %d bytes, over actor.MaxStateBytes", len(e.state))
	}
	// Replacing or shrinking it is fine.
	e.check(t, 8, step{verb: "patch", payload: `{"patch":{"a":null}}`, events: []string{`patched {"patch":{"a":null}}`}})
	e.check(t, 9, step{verb: "update", payload: `{"doc":{"small":true}}`, events: []string{`updated {"doc":{"small":true}}`},
		state: `{"exists":true,"doc":{"small":true}}`})
}

// TestKVUpdateEvolveScansOnce: evolving a kv entity by an update checks the
// new document's canonical form once (reading the event), not a second time
// to encode the state, and the state is still what encoding/json writes.
// The second scan cost an allocation of the document's size.
func TestKVUpdateEvolveScansOnce(t *testing.T) {
	b := KV()
	pad := strings.Repeat("x", 200)
	state := []byte(`{"exists":true,"doc":{"a":1}}`)
	doc := `{"pad":"` + pad + `","seq":7}`
	ev := &actor.Event{Type: actor.EventType(KVType, "updated"), Payload: []byte(`{"doc":` + doc + `}`)}
	got, err := b.Evolve(state, ev)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(&KVState{Exists: true, Doc: json.RawMessage(doc)})
	if !bytes.Equal(got, want) {
		t.Fatalf("state %s, want %s", got, want)
	}
	// It was 6 with the second scan.
	if n := testing.AllocsPerRun(100, func() { _, _ = b.Evolve(state, ev) }); n > 5 {
		t.Fatalf("Evolve allocates %.0f times, want at most 5", n)
	}
	// A document that is not canonical still goes through encoding/json.
	s := KVState{Exists: true, Doc: json.RawMessage(`{ "b":1, "a":2 }`)}
	got, _ = encodeKVState(&s)
	if want, _ := json.Marshal(&s); !bytes.Equal(got, want) {
		t.Fatalf("state %s, want %s", got, want)
	}
}
