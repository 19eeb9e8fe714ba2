package actor_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

// Encoded index values sort as the values do (null, false, true, numbers,
// strings), decode back, and no encoding is a prefix of another's.
func TestIndexValueOrder(t *testing.T) {
	ordered := []string{`null`, `false`, `true`, `-1e300`, `-2.5`, `-1`, `0`, `1e-9`, `1`, `2`, `10`, `1e300`,
		`""`, `"\u0000"`, `"\u0000a"`, `"a"`, `"a\u0000"`, `"ab"`, `"b"`, `"é"`}
	var enc [][]byte
	for _, v := range ordered {
		e, ok := actor.EncodeIndexValue(json.RawMessage(v))
		if !ok {
			t.Fatalf("%s not encoded", v)
		}
		if n := actor.IndexValueLen(append(slices.Clone(e), "id-after"...)); n != len(e) {
			t.Fatalf("%s: length %d of %d", v, n, len(e))
		}
		back, err := actor.DecodeIndexValue(e)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		_ = json.Unmarshal([]byte(v), &a)
		_ = json.Unmarshal(back, &b)
		if a != b {
			t.Fatalf("%s decoded as %s", v, back)
		}
		enc = append(enc, e)
	}
	for i := 1; i < len(enc); i++ {
		if bytes.Compare(enc[i-1], enc[i]) >= 0 {
			t.Fatalf("%s does not sort before %s", ordered[i-1], ordered[i])
		}
	}
	if z, _ := actor.EncodeIndexValue(json.RawMessage(`-0`)); !bytes.Equal(z, enc[6]) {
		t.Fatal("-0 and 0 differ")
	}
	for _, v := range []string{`{}`, `[1]`, ``, `nul`} {
		if _, ok := actor.EncodeIndexValue(json.RawMessage(v)); ok {
			t.Fatalf("%q encoded", v)
		}
	}
}
