package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// listOut is what `rhizon list -o json` prints.
type listOut struct {
	Items []struct {
		ID      string          `json:"id"`
		Version uint64          `json:"version"`
		State   json.RawMessage `json:"state"`
	} `json:"items"`
	NextPageToken string `json:"next_page_token"`
	Count         uint64 `json:"count"`
}

func (l listOut) ids() []string {
	out := make([]string, 0, len(l.Items))
	for _, it := range l.Items {
		out = append(out, it.ID)
	}
	return out
}

func (p *devProcess) list(t *testing.T, args ...string) listOut {
	t.Helper()
	out, code := p.rhizon(t, append([]string{"list", "-o", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("list %v: exit %d: %s", args, code, out)
	}
	return decode[listOut](t, out)
}

// A document type declared on `rhizon dev` behaves as kv under its own name,
// and rhizon list pages through it by id, by prefix and by an indexed field
// (equality and range), over the CLI and POST /v1/list, also after kill -9.
func TestList_DocumentTypesOnDev(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := "RHIZON_DOCUMENT_TYPES=user:email,age;invoice"
	p := startDev(t, dir, env)

	r := p.seedSend(t, 0, "user/u1", "create", `{"doc":{"email":"a@x","age":30}}`)
	if len(r.Events) != 1 || r.Events[0].Type != "evt.user.created" {
		t.Fatalf("create user: %+v", r)
	}
	for i, age := range []int{41, 25, 30, 52, 38} {
		p.seedSend(t, 0, fmt.Sprintf("user/u%d", i+2), "create", fmt.Sprintf(`{"doc":{"email":"u%d@x","age":%d}}`, i+2, age))
	}
	p.seedSend(t, 0, "invoice/i1", "create", `{"doc":{"total":5}}`)
	p.seedSend(t, 0, "user/u6", "delete", `{}`)
	p.seedSend(t, 0, "user/u3", "patch", `{"patch":{"email":"b@x"}}`)

	all := p.list(t, "user")
	if want := []string{"u1", "u2", "u3", "u4", "u5"}; !slices.Equal(all.ids(), want) || all.Count != 5 || all.NextPageToken != "" {
		t.Fatalf("list user = %v count %d token %q, want %v", all.ids(), all.Count, all.NextPageToken, want)
	}
	// Pages of 4 then 1, with the count of all.
	p1 := p.list(t, "user", "--limit", "4")
	p2 := p.list(t, "user", "--limit", "4", "--page-token", p1.NextPageToken)
	if !slices.Equal(p1.ids(), []string{"u1", "u2", "u3", "u4"}) || !slices.Equal(p2.ids(), []string{"u5"}) || p2.NextPageToken != "" || p1.Count != 5 {
		t.Fatalf("pages %v / %v (count %d, token %q)", p1.ids(), p2.ids(), p1.Count, p2.NextPageToken)
	}
	if got := p.list(t, "invoice"); !slices.Equal(got.ids(), []string{"i1"}) {
		t.Fatalf("list invoice = %v", got.ids())
	}
	if got := p.list(t, "user", "--where", "email=b@x"); !slices.Equal(got.ids(), []string{"u3"}) || got.Count != 1 {
		t.Fatalf("where email=b@x = %v", got.ids())
	}
	// 30 <= age < 52, by (age, id): u1 30, u4 30, u2 41 (u6, 38, is deleted)
	if got := p.list(t, "user", "--where", "age>=30", "--where", "age<52"); !slices.Equal(got.ids(), []string{"u1", "u4", "u2"}) {
		t.Fatalf("where 30 <= age < 52 = %v", got.ids())
	}

	// HTTP
	body := `{"type":"user","where":[{"field":"age","op":"<","value":30}]}`
	req, _ := http.NewRequest(http.MethodPost, p.http+"/v1/list", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var hl listOut
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err := json.Unmarshal(buf.Bytes(), &hl); err != nil || resp.StatusCode != 200 || !slices.Equal(hl.ids(), []string{"u3"}) {
		t.Fatalf("POST /v1/list: %d %s", resp.StatusCode, buf.String())
	}

	// Bad input says what to fix.
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"list", "counter"}, "not a document type"},
		{[]string{"list", "user", "--where", "name=x"}, `field "name" of "user" has no index`},
		{[]string{"list", "user", "--limit", "5000"}, "the limit is 1000"},
		{[]string{"list", "user", "--page-token", "zz"}, "page_token is not one this server issued"},
	} {
		if msg, code := p.seedRhizonStderr(t, c.args...); code != exitError || !strings.Contains(msg, "InvalidArgument") || !strings.Contains(msg, c.msg) {
			t.Fatalf("%v: exit %d, stderr %q, want InvalidArgument %q", c.args, code, msg, c.msg)
		}
	}

	p.kill()
	p = startDev(t, dir, env)
	if got := p.list(t, "user", "--where", "age>=30"); !slices.Equal(got.ids(), []string{"u1", "u4", "u2", "u5"}) {
		t.Fatalf("after kill -9: where age>=30 = %v", got.ids())
	}

	// Offline replay needs the node's declaration: with it the log replays
	// identically; without it the user commands are decided otherwise.
	p.kill()
	if out, code := p.rhizon(t, "replay", "--data-dir", dir, "--document-types", "user:email,age;invoice"); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("replay with the declaration: exit %d %s", code, out)
	}
	if out, code := p.rhizon(t, "replay", "--data-dir", dir); code != exitDiverged {
		t.Fatalf("replay without the declaration: exit %d %s, want %d", code, out, exitDiverged)
	}
}
