package builtin

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/rhizon/rhizon/actor"
)

// jsonish draws texts close to the shapes the fast paths accept: mostly
// well-formed, with the near misses (letter case, escapes, leading zeros,
// fractions, exponents, out-of-range numbers, extra fields, trailing data)
// that must fall back to encoding/json.
func jsonish(t *rapid.T, keys ...string) string {
	ws := rapid.SampledFrom([]string{"", "", "", " ", "\t", "\n ", "\r\n", "\u00a0"})
	num := rapid.OneOf(
		rapid.Map(rapid.Int64(), func(v int64) string { return fmt.Sprint(v) }),
		rapid.SampledFrom([]string{
			"0", "-0", "00", "01", "-01", "1.5", "1.0", "1e3", "1E3", "-", "+1", "",
			"9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
			"18446744073709551615", "99999999999999999999", "12345678901234567890", "1_0", "0x10",
			`"5"`, "null", "true", "[1]", "{}",
		}),
	)
	var b strings.Builder
	b.WriteString(ws.Draw(t, "ws"))
	if rapid.IntRange(0, 20).Draw(t, "notobject") == 0 {
		b.WriteString(rapid.SampledFrom([]string{"null", "[1]", "5", `"x"`, "true", ""}).Draw(t, "scalar"))
		return b.String()
	}
	b.WriteString("{")
	n := len(keys)
	if rapid.IntRange(0, 8).Draw(t, "shape") == 0 {
		n = rapid.IntRange(0, len(keys)+1).Draw(t, "fields")
	}
	for i := range n {
		if i > 0 {
			b.WriteString(ws.Draw(t, "ws") + "," + ws.Draw(t, "ws"))
		}
		key := "x"
		if i < len(keys) {
			key = keys[i]
		}
		key = rapid.SampledFrom([]string{key, key, key, key, strings.ToUpper(key), `\u00` + fmt.Sprintf("%x", key[0]) + key[1:], key + "x", "by"}).Draw(t, "key")
		b.WriteString(ws.Draw(t, "ws") + `"` + key + `"` + ws.Draw(t, "ws") + ":" + ws.Draw(t, "ws"))
		b.WriteString(num.Draw(t, "num"))
	}
	b.WriteString(ws.Draw(t, "ws"))
	if rapid.IntRange(0, 10).Draw(t, "unclosed") > 0 {
		b.WriteString("}")
	}
	b.WriteString(ws.Draw(t, "ws"))
	if rapid.IntRange(0, 10).Draw(t, "trailing") == 0 {
		b.WriteString(rapid.SampledFrom([]string{"}", "x", "{}", ",", `{"amount":1}`}).Draw(t, "junk"))
	}
	return b.String()
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// The fast path of cmd.counter.add must accept exactly what encoding/json
// accepts, with the same amount, and leave every rejection (and its message)
// to it.
func TestCounterAddFastPathMatchesEncodingJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		payload := jsonish(t, "amount")
		cmd := &actor.Command{Type: "cmd.counter.add", Payload: []byte(payload)}
		n, err := parseCounterAdd(cmd)
		wn, werr := parseCounterAddJSON(cmd)
		if n != wn || errString(err) != errString(werr) {
			t.Fatalf("payload %q: fast path %d, %v; encoding/json %d, %v", payload, n, err, wn, werr)
		}
		if fn, ok := fastCounterAdd(cmd.Payload); ok && (werr != nil || fn != wn) {
			t.Fatalf("payload %q: fast path accepted %d, encoding/json says %d, %v", payload, fn, wn, werr)
		}
	})
}

func TestCounterStateCodecMatchesEncodingJSON(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 42, math.MaxInt64, math.MinInt64, 1e15} {
		got, _ := encodeCounterState(&CounterState{Value: v})
		want, _ := json.Marshal(&CounterState{Value: v})
		if string(got) != string(want) {
			t.Fatalf("encode %d: %s, want %s", v, got, want)
		}
		ev, want := encodeCounterAdded(CounterAdded{Amount: v, Value: -v}), actor.MustJSON(CounterAdded{Amount: v, Value: -v})
		if string(ev) != string(want) {
			t.Fatalf("event %d: %s, want %s", v, ev, want)
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		v := rapid.Int64().Draw(t, "v")
		got, _ := encodeCounterState(&CounterState{Value: v})
		want, _ := json.Marshal(&CounterState{Value: v})
		if string(got) != string(want) {
			t.Fatalf("encode %d: %s, want %s", v, got, want)
		}
		a := rapid.Int64().Draw(t, "a")
		if got, want := encodeCounterAdded(CounterAdded{Amount: a, Value: v}), actor.MustJSON(CounterAdded{Amount: a, Value: v}); string(got) != string(want) {
			t.Fatalf("event: %s, want %s", got, want)
		}

		state := jsonish(t, "value")
		var fs, js CounterState
		ferr, jerr := decodeCounterState([]byte(state), &fs), json.Unmarshal([]byte(state), &js)
		if fs != js || errString(ferr) != errString(jerr) {
			t.Fatalf("state %q: fast %+v, %v; encoding/json %+v, %v", state, fs, ferr, js, jerr)
		}

		payload := jsonish(t, "amount", "value")
		ev := &actor.Event{Type: evtCounterAdded, Payload: []byte(payload)}
		fe, ferr := decodeCounterAdded(ev)
		var je CounterAdded
		jerr = decodeEvent(ev, &je)
		if fe != je || errString(ferr) != errString(jerr) {
			t.Fatalf("event %q: fast %+v, %v; encoding/json %+v, %v", payload, fe, ferr, je, jerr)
		}
	})
}
