package main

import (
	"regexp"
	"testing"
)

// `rhizon actor list` on a dev node with a document type that declares
// several indexes shows it as one type with one revision (its indexes are
// part of the revision it gossips), not a row per index.
func TestCLI_ActorListShowsAnIndexedDocumentTypeOnce(t *testing.T) {
	needBinary(t)
	t.Parallel()
	p := startDev(t, t.TempDir(), "RHIZON_DOCUMENT_TYPES=user:email,age;invoice")
	out, code := p.rhizon(t, "actor", "list", "-o", "json")
	rows := decode[[]actorRow](t, out)
	byType := map[string]actorRow{}
	for _, r := range rows {
		byType[r.Type] = r
	}
	for typ, want := range map[string]string{"user": "2/doc:age;email", "invoice": "2/doc"} {
		r := byType[typ]
		if code != 0 || len(r.Revisions) != 1 || len(r.Revisions[want]) != 1 || len(r.Missing) != 0 {
			t.Fatalf("actor list: %s has %+v; want the one revision %s on the node:\n%s", typ, r, want, out)
		}
	}
	out, code = p.rhizon(t, "actor", "list")
	if n := len(regexp.MustCompile(`(?m)^user +`).FindAllString(out, -1)); code != 0 || n != 1 ||
		!regexp.MustCompile(`(?m)^user +2/doc:age;email +- +dev +$`).MatchString(out) {
		t.Fatalf("actor list: exit %d, %d rows of user:\n%s", code, n, out)
	}
}
