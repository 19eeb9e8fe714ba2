package builtin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

// canonSeeds are documents of every shape the fast paths take or refuse.
var canonSeeds = []string{
	`{}`, `[]`, `{"a":1}`, `{"b":1,"a":2}`, ` { "b" : [1, 2.50, -0, 1e5, 1E-7, true, false, null] , "a" : {"y":{},"x":[]} } `,
	`{"seq":17,"pad":"xxxxxxxx"}`, `{"a":"héllo ☃ 𝄞"}`, `{"a":"x<y"}`, `{"a":"x&y"}`, `{"a":"\u003c"}`,
	`{"a":"line\nbreak"}`, `{"a":"tab	in"}`, `{"a":"\u2028"}`, "{\"a\":\"\xe2\x80\xa8\"}", "{\"a\":\"\xff\"}",
	`{"a":1,"a":2}`, `{"b":1,"a":2,"b":3}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":.5}`, `{"a":1e}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":1,}`, `{,}`, `[1,]`, `{"a" 1}`, `{"a":1}x`, `{"a":1} {}`, `"str"`, `12`,
	`{"\u0061":1}`, `{"A":1,"a":2,"_":3,"Z":4}`, `{"a":{"c":1,"b":{"z":1,"y":[{"q":1,"p":2}]}}}`,
	strings.Repeat(`[`, 70) + strings.Repeat(`]`, 70), `{"a":[` + strings.Repeat(`{"k":1},`, 40) + `{}]}`,
}

// FuzzCanonScanMatchesEncodingJSON: whatever the fast path accepts, it
// canonicalizes exactly as canonicalJSON (encoding/json) does. Stored state,
// events and the state hash depend on these bytes on every replica.
func FuzzCanonScanMatchesEncodingJSON(f *testing.F) {
	for _, s := range canonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, ok := fastCanonical(b)
		if !ok {
			return
		}
		want, _, err := canonicalJSON(b)
		if err != nil {
			t.Fatalf("fast path took %q, which encoding/json refuses: %v", b, err)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("canonical form of %q: fast %q, encoding/json %q", b, out, want)
		}
	})
}

// The fast path must also take the documents clients usually send, or it
// saves nothing: plain keys in any order, whitespace, nesting.
func TestCanonScanTakesPlainDocuments(t *testing.T) {
	for _, s := range []string{
		`{"seq":17,"pad":"xxxxxxxx"}`, ` { "b" : [1, 2.50, -0, 1e5, true, false, null] , "a" : {"y":{},"x":[]} } `,
		`{"a":"héllo ☃ 𝄞"}`, `{"a":{"c":1,"b":{"z":1,"y":[{"q":1,"p":2}]}}}`, `{"a":[` + strings.Repeat(`{"k":1},`, 40) + `{}]}`,
	} {
		if _, ok := fastCanonical([]byte(s)); !ok {
			t.Errorf("fast path refused %s", s)
		}
	}
	// What only encoding/json may decide: escapes, HTML characters,
	// duplicates, invalid JSON, deep nesting.
	for _, s := range []string{
		`{"a":"x<y"}`, `{"a":"\u003c"}`, `{"a":"line\nbreak"}`, `{"a":1,"a":2}`, `{"b":1,"a":2,"b":3}`,
		`{"a":01}`, `{"a":1,}`, `{"a":1}x`, "{\"a\":\"\xff\"}", "{\"a\":\"\xe2\x80\xa8\"}",
		strings.Repeat(`[`, 70) + strings.Repeat(`]`, 70),
	} {
		if out, ok := fastCanonical([]byte(s)); ok {
			t.Errorf("fast path took %s (gave %s); encoding/json must decide", s, out)
		}
	}
}

// Every kv fast path gives the bytes and values its encoding/json
// counterpart gives: commands, events and stored state.
func TestKVFastPathsMatchEncodingJSON(t *testing.T) {
	for _, s := range canonSeeds {
		for _, field := range []string{"doc", "patch"} {
			payload := []byte(fmt.Sprintf(`{%q: %s}`, field, s))
			cmd := &actor.Command{Type: "cmd.kv.update", Payload: payload}
			got, gotErr := parseKVDoc(cmd)
			if field == "patch" {
				cmd.Type = "cmd.kv.patch"
				got, gotErr = parseKVPatch(cmd)
			}
			var want []byte
			var wantErr error
			if field == "doc" {
				var p kvDocPayload
				if wantErr = decodePayload(cmd, &p, `{"doc": {"name": "Ada"}}`, false, false); wantErr == nil {
					want, wantErr = canonicalObject("doc", p.Doc, `{"doc": {"name": "Ada"}}`)
				}
			} else {
				var p kvPatchPayload
				if wantErr = decodePayload(cmd, &p, `{"patch": {"name": "Ada", "old_field": null}}`, false, false); wantErr == nil {
					want, wantErr = canonicalObject("patch", p.Patch, `{"patch": {"name": "Ada", "old_field": null}}`)
				}
			}
			if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !bytes.Equal(got, want) {
				t.Fatalf("%s: got %q, %v; encoding/json gives %q, %v", payload, got, gotErr, want, wantErr)
			}
			if gotErr != nil {
				continue
			}
			// The event written for it, and the event read back.
			ev := kvFieldJSON(field, got)
			var wantEv []byte
			if field == "doc" {
				wantEv = actor.MustJSON(KVDoc{Doc: got})
			} else {
				wantEv = actor.MustJSON(KVPatched{Patch: got})
			}
			if !bytes.Equal(ev, wantEv) {
				t.Fatalf("event for %s: %s, encoding/json writes %s", got, ev, wantEv)
			}
			// Read back: the fast path takes it unless the document has
			// escapes (the slow path then reads it), and gives it unchanged.
			v, ok := fastKVEventField(ev, field)
			if ok != !bytes.ContainsRune(got, '\\') || (ok && !bytes.Equal(v, got)) {
				t.Fatalf("event %s read back as %q (ok %v)", ev, v, ok)
			}
		}
	}
}

func TestKVStateCodecMatchesEncodingJSON(t *testing.T) {
	states := []KVState{{}, {Exists: true}, {Exists: false, Doc: json.RawMessage(`{"a":1}`)}}
	for _, s := range canonSeeds {
		if canon, _, err := canonicalJSON([]byte(s)); err == nil {
			states = append(states, KVState{Exists: true, Doc: canon})
		}
	}
	// Not canonical: the codec must hand these to encoding/json.
	states = append(states, KVState{Exists: true, Doc: json.RawMessage(`{ "b":1, "a":2 }`)}, KVState{Exists: true, Doc: json.RawMessage(`{"a":"<"}`)})
	for _, s := range states {
		got, err := encodeKVState(&s)
		want, wantErr := json.Marshal(&s)
		if err != nil || wantErr != nil || !bytes.Equal(got, want) {
			t.Fatalf("state %+v: encoded %s (%v), encoding/json %s (%v)", s, got, err, want, wantErr)
		}
		var dec, wantDec KVState
		if err := decodeKVState(want, &dec); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want, &wantDec); err != nil {
			t.Fatal(err)
		}
		if dec.Exists != wantDec.Exists || !bytes.Equal(dec.Doc, wantDec.Doc) || (dec.Doc == nil) != (wantDec.Doc == nil) {
			t.Fatalf("state %s decoded as %+v, encoding/json gives %+v", want, dec, wantDec)
		}
	}
	// Shapes the codec does not write still decode as encoding/json does.
	for _, raw := range []string{`{ "exists" : true , "doc" : { "b":1 } }`, `{"doc":{"a":1},"exists":true}`, `{"exists":true,"doc":null}`} {
		var dec, wantDec KVState
		if err := decodeKVState([]byte(raw), &dec); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal([]byte(raw), &wantDec)
		if dec.Exists != wantDec.Exists || !bytes.Equal(dec.Doc, wantDec.Doc) {
			t.Fatalf("state %s decoded as %+v, encoding/json gives %+v", raw, dec, wantDec)
		}
	}
}

// BenchmarkKVUpdate is what every replica does for one w1-occ update of the
// benchmark's 200-byte document: Validate, Decide and Evolve (with the state
// decoded and encoded), as the engine calls them.
//
//	go test -run '^$' -bench KVUpdate ./actor/builtin/
func BenchmarkKVUpdate(b *testing.B) {
	kv := KV()
	doc := `{"seq":12345,"pad":"` + strings.Repeat("x", 170) + `"}`
	addr := actor.Address{Tenant: "t", Workspace: "w", ActorType: KVType, EntityID: "e"}
	state, err := kv.Evolve(nil, &actor.Event{Type: evtKVCreated, Payload: kvFieldJSON("doc", []byte(`{"a":1}`))})
	if err != nil {
		b.Fatal(err)
	}
	cmd := &actor.Command{Type: "cmd.kv.update", Address: addr, Payload: []byte(`{"doc":` + doc + `}`)}
	b.ReportAllocs()
	for b.Loop() {
		if err := kv.(actor.Validator).Validate(cmd); err != nil {
			b.Fatal(err)
		}
		ctx := actor.NewContext(addr, actor.Security{}, 0, 1, 1)
		evs, err := kv.Decide(ctx, state, cmd)
		if err != nil || len(evs) != 1 {
			b.Fatal(evs, err)
		}
		if _, err := kv.Evolve(state, &actor.Event{Type: evtKVUpdated, Payload: evs[0].Payload}); err != nil {
			b.Fatal(err)
		}
	}
}
