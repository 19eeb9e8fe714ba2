package builtin

import (
	"strings"
	"testing"
)

func TestMergePatch(t *testing.T) {
	for _, tc := range []struct{ doc, patch, want string }{
		// RFC 7396 Appendix A (the cases whose document and patch are objects).
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		// More.
		{``, `{"a":1}`, `{"a":1}`},
		{` {"b":1, "a":2} `, ` {} `, `{"a":2,"b":1}`},
		{`{"a":{"b":{"c":1,"d":2},"e":3}}`, `{"a":{"b":{"c":null,"x":[null]}}}`, `{"a":{"b":{"d":2,"x":[null]},"e":3}}`},
		{`{"a":1}`, `{"a":{"b":null,"c":{"d":null}}}`, `{"a":{"c":{}}}`},
		{`{"a":{"b":1}}`, `{"a":[{"b":null}]}`, `{"a":[{"b":null}]}`},
		{`{"n":1}`, `{"n":1.000,"m":-0,"k":1E+2}`, `{"k":1E+2,"m":-0,"n":1.000}`},
		{`{"s":"x"}`, `{"s":"<\u0026>","t":"\u00e9"}`, `{"s":"\u003c\u0026\u003e","t":"é"}`},
		// Members apply in order; a later duplicate sees the earlier one's result.
		{`{"a":{"x":1,"y":2}}`, `{"a":null,"a":{"x":3}}`, `{"a":{"x":3}}`},
		{`{"a":{"x":1,"y":2}}`, `{"a":{"x":3},"a":{"z":4}}`, `{"a":{"x":3,"y":2,"z":4}}`},
	} {
		got, err := MergePatch([]byte(tc.doc), []byte(tc.patch))
		if err != nil {
			t.Errorf("MergePatch(%s, %s): %v", tc.doc, tc.patch, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("MergePatch(%s, %s) = %s, want %s", tc.doc, tc.patch, got, tc.want)
		}
	}
}

func TestMergePatchErrors(t *testing.T) {
	for _, tc := range []struct{ doc, patch, want string }{
		{`["a","b"]`, `{"a":1}`, "document must be a JSON object, got an array"},
		{`{"a":"b"}`, `["c"]`, "patch must be a JSON object, got an array"},
		{`{"a":"foo"}`, `null`, "patch must be a JSON object, got null"},
		{`{"a":"foo"}`, `"bar"`, "patch must be a JSON object, got a string"},
		{`{"a":`, `{}`, "document:"},
		{`{}`, `{"a":`, "patch:"},
		{`{}`, `{"a":1} {}`, "patch: data after the JSON value"},
		{`{} 1`, `{}`, "document: data after the JSON value"},
		{`{}`, ``, "patch: EOF"},
	} {
		_, err := MergePatch([]byte(tc.doc), []byte(tc.patch))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("MergePatch(%s, %s): error %v, want one containing %q", tc.doc, tc.patch, err, tc.want)
		}
	}
}
