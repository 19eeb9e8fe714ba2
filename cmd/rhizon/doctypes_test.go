package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// --document-types reads the flag's forms and the config file's list and
// map forms alike, and refuses a bad declaration saying what is wrong.
func TestDocumentTypesFlagAndConfig(t *testing.T) {
	for _, c := range []struct {
		name, yaml, want string
	}{
		{"list", "document-types:\n  - user:email,age\n  - invoice\n", "invoice;user:age;email"},
		{"map", "document-types:\n  user: [email, age]\n  invoice: []\n", "invoice;user:age;email"},
		{"string", "document-types: user,invoice\n", "invoice;user"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "node.yaml")
			if err := os.WriteFile(cfg, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			var f nodeFlags
			fs.StringVar(&f.config, "config", cfg, "")
			fs.Var(&f.docTypes, "document-types", "")
			if err := applyConfig(fs); err != nil {
				t.Fatal(err)
			}
			reg, err := f.docTypes.registry()
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, typ := range []string{"invoice", "user"} {
				b, ok := reg.Lookup(typ)
				if !ok {
					t.Fatalf("%s not registered: %v", typ, reg.Types())
				}
				v := strings.TrimPrefix(b.(interface{ Version() string }).Version(), "2/doc")
				got = append(got, typ+v)
			}
			if strings.Join(got, ";") != c.want {
				t.Fatalf("declared %q, want %q", strings.Join(got, ";"), c.want)
			}
		})
	}
	for _, c := range []struct{ v, msg string }{
		{"kv", "built-in actor type"},
		{"user;user:age", "declared twice"},
		{"a.b", "cannot contain '.'"},
		{"user:a b", "must be a top-level JSON key"},
		{"user:a,b,c,d,e,f,g,h,i", "the limit is 8"},
		{`{"user": 3}`, "a document-types map is"},
	} {
		var f docTypesFlag
		if err := f.Set(c.v); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("--document-types %q: %v, want %q", c.v, err, c.msg)
		}
	}
}
