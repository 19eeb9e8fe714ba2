package builtin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"pgregory.net/rapid"
)

// The balance of an account never goes negative and always equals a simple
// model, whatever sequence of commands arrives; every refusal has the code
// the model predicts.
func TestPropertyAccountBalance(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		e := newEntity(Account())
		open, balance := false, int64(0)
		amount := rapid.OneOf(
			rapid.Int64Range(-5, 200),
			rapid.Int64Range(1<<62, 1<<63-1),
		)
		n := rapid.IntRange(1, 40).Draw(t, "n")
		for i := range n {
			verb := rapid.SampledFrom([]string{"open", "deposit", "withdraw", "withdraw"}).Draw(t, fmt.Sprint("verb", i))
			payload := `{}`
			var amt int64
			if verb != "open" {
				amt = amount.Draw(t, fmt.Sprint("amount", i))
				payload = fmt.Sprintf(`{"amount":%d}`, amt)
			}
			out := e.exec(t, int64(i), verb, payload)

			want := ""
			switch {
			case verb != "open" && amt <= 0:
				want = "invalid"
			case verb == "open" && open:
				want = "already_open"
			case verb != "open" && !open:
				want = "not_open"
			case verb == "deposit" && balance > 1<<63-1-amt:
				want = "overflow"
			case verb == "withdraw" && amt > balance:
				want = "insufficient_funds"
			}
			code := ""
			if r, ok := actor.AsRejection(out.err); ok {
				code = r.Code
			} else if out.err != nil {
				t.Fatalf("%s %s: %v", verb, payload, out.err)
			}
			if code != want {
				t.Fatalf("%s %s with open=%v balance=%d: got %q, want %q", verb, payload, open, balance, code, want)
			}
			if code == "" {
				switch verb {
				case "open":
					open = true
				case "deposit":
					balance += amt
				case "withdraw":
					balance -= amt
				}
			}
			var s AccountState
			if err := json.Unmarshal(e.state, &s); err != nil && len(e.state) > 0 {
				t.Fatal(err)
			}
			if s.Balance < 0 || s.Balance != balance || s.Open != open {
				t.Fatalf("state %s, model open=%v balance=%d", e.state, open, balance)
			}
		}
		if got := e.replay(t); !bytes.Equal(got, e.state) {
			t.Fatalf("replay %s != %s", got, e.state)
		}
	})
}

var (
	propKeys    = []string{"a", "b", "c", "d"}
	propNumbers = []string{"0", "-1", "7", "1.5", "1.50", "-0", "1e3", "2E-2", "12345678901234567890123"}
	propStrings = []string{"", "x", "<&>", "é", "\u2028", `q"uote`}
)

// genJSON draws a JSON value as encoding/json decodes it with UseNumber.
// Objects are drawn only while depth > 0; null only when nulls is set.
func genJSON(t *rapid.T, label string, depth int, nulls bool) any {
	kinds := []string{"bool", "number", "string", "array"}
	if nulls {
		kinds = append(kinds, "null")
	}
	if depth > 0 {
		kinds = append(kinds, "object", "object")
	}
	switch rapid.SampledFrom(kinds).Draw(t, label+".kind") {
	case "null":
		return nil
	case "bool":
		return rapid.Bool().Draw(t, label+".bool")
	case "number":
		return json.Number(rapid.SampledFrom(propNumbers).Draw(t, label+".num"))
	case "string":
		return rapid.SampledFrom(propStrings).Draw(t, label+".str")
	case "array":
		n := rapid.IntRange(0, 3).Draw(t, label+".len")
		arr := make([]any, n)
		for i := range arr {
			// Arrays may hold objects with nulls: they are values, not patches.
			arr[i] = genJSON(t, fmt.Sprintf("%s[%d]", label, i), min(depth-1, 1), true)
		}
		return arr
	}
	return genObject(t, label, depth-1, nulls)
}

func genObject(t *rapid.T, label string, depth int, nulls bool) map[string]any {
	m := map[string]any{}
	n := rapid.IntRange(0, len(propKeys)).Draw(t, label+".size")
	for i := range n {
		k := rapid.SampledFrom(propKeys).Draw(t, fmt.Sprintf("%s.key%d", label, i))
		m[k] = genJSON(t, label+"."+k, depth, nulls)
	}
	return m
}

// refMerge is RFC 7396's MergePatch pseudo-code, on decoded values.
func refMerge(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range p { //rhizon:deterministic test-only reference; each key is independent
		if v == nil {
			delete(tm, k)
		} else {
			tm[k] = refMerge(tm[k], v)
		}
	}
	return tm
}

func mustDecode(t *rapid.T, b []byte) any {
	v, err := decodeJSON(b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// MergePatch agrees with the RFC's algorithm, is idempotent, returns canonical
// JSON, and the kv actor's document after a patch is exactly its result.
func TestPropertyMergePatch(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		doc := actor.MustJSON(genObject(t, "doc", 3, true))
		patch := actor.MustJSON(genObject(t, "patch", 3, true))

		got, err := MergePatch(doc, patch)
		if err != nil {
			t.Fatalf("MergePatch(%s, %s): %v", doc, patch, err)
		}
		want := actor.MustJSON(refMerge(mustDecode(t, doc), mustDecode(t, patch)))
		if !bytes.Equal(got, want) {
			t.Fatalf("MergePatch(%s, %s)\n got %s\nwant %s", doc, patch, got, want)
		}
		again, err := MergePatch(got, patch)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("not idempotent: %s then %s (%v)", got, again, err)
		}
		if canon, _, err := canonicalJSON(got); err != nil || !bytes.Equal(canon, got) {
			t.Fatalf("result %s is not canonical (%s, %v)", got, canon, err)
		}

		e := newEntity(KV())
		if out := e.exec(t, 1, "create", `{"doc":`+string(doc)+`}`); out.err != nil {
			t.Fatalf("create: %v", out.err)
		}
		if out := e.exec(t, 2, "patch", `{"patch":`+string(patch)+`}`); out.err != nil {
			t.Fatalf("patch: %v", out.err)
		}
		out := e.exec(t, 3, "get", ``)
		if !bytes.Equal(out.reply, got) {
			t.Fatalf("kv document %s, want %s", out.reply, got)
		}
		if r := e.replay(t); !bytes.Equal(r, e.state) {
			t.Fatalf("replay %s != %s", r, e.state)
		}
	})
}
