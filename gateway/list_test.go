package gateway

import (
	"testing"
)

// CLI conditions: the operator is the longest of = < <= > >= at the first
// of =<>, and the value is JSON when it is a JSON scalar, else a string.
func TestParseWhere(t *testing.T) {
	for in, want := range map[string][3]string{
		"email=a@b":     {"email", "=", `"a@b"`},
		"age>=30":       {"age", ">=", "30"},
		"age>30":        {"age", ">", "30"},
		"age<=-1.5":     {"age", "<=", "-1.5"},
		"age<1e3":       {"age", "<", "1e3"},
		"ok=true":       {"ok", "=", "true"},
		`name="true"`:   {"name", "=", `"true"`},
		"name=":         {"name", "=", `""`},
		"note=a=b":      {"note", "=", `"a=b"`},
		`tag={"x":1}`:   {"tag", "=", `"{\"x\":1}"`},
		"x=null":        {"x", "=", "null"},
		"version>=1.2a": {"version", ">=", `"1.2a"`},
	} {
		w, err := ParseWhere(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := [3]string{w.GetField(), w.GetOp(), w.GetValue()}; got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"=1", "age", ">3"} {
		if _, err := ParseWhere(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
