package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
)

func TestLoadTokenFileRejectsBadEntries(t *testing.T) {
	const good = `{"token":"0123456789abcdef","principal":{"id":"dev","type":"user"},"scopes":[{"tenant":"dev","workspace":"*"}]}`
	cases := []struct {
		name, file, body string
		want             []string // substrings of the error
	}{
		{"bad principal type", "t.json", `{"tokens":[{"token":"0123456789abcdef","principal":{"id":"dev","type":"admin"},"scopes":[{"tenant":"dev","workspace":"*"}]}]}`,
			[]string{"t.json", "token entry 1", `principal "dev"`, `principal type "admin" is not one of user, service, agent, system`}},
		{"short token", "t.json", `{"tokens":[` + good + `,{"token":"short","principal":{"id":"ci","type":"service"},"scopes":[{"tenant":"dev","workspace":"*"}]}]}`,
			[]string{"token entry 2", `principal "ci"`, "token is 5 characters; use at least 16"}},
		{"empty token", "t.json", `{"tokens":[{"token":"","principal":{"id":"dev","type":"user"},"scopes":[{"tenant":"dev","workspace":"*"}]}]}`,
			[]string{"token is empty"}},
		{"no scopes", "t.json", `{"tokens":[{"token":"0123456789abcdef","principal":{"id":"dev","type":"user"},"scopes":[]}]}`,
			[]string{"no scopes"}},
		{"bad tenant", "t.json", `{"tokens":[{"token":"0123456789abcdef","principal":{"id":"dev","type":"user"},"scopes":[{"tenant":"a b","workspace":"*"}]}]}`,
			[]string{"scope 1", "tenant"}},
		{"missing principal id", "t.json", `{"tokens":[{"token":"0123456789abcdef","principal":{"type":"user"},"scopes":[{"tenant":"dev","workspace":"*"}]}]}`,
			[]string{"principal id is required"}},
		{"duplicate token", "t.json", `{"tokens":[` + good + `,` + good + `]}`, []string{"token entry 2", "appears twice"}},
		{"no tokens", "t.json", `{"tokens":[]}`, []string{"no tokens"}},
		{"unknown field", "t.json", `{"tokens":[{"token":"0123456789abcdef","principal":{"id":"dev","type":"user"},"scope":[{"tenant":"dev","workspace":"*"}]}]}`,
			[]string{`unknown field "scope"`}},
		{"yaml bad type", "t.yaml", "tokens:\n  - token: 0123456789abcdef\n    principal: {id: dev, type: robot}\n    scopes: [{tenant: dev, workspace: '*'}]\n",
			[]string{"t.yaml", `principal type "robot"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadTokenFile(p)
			if err == nil {
				t.Fatal("loaded a bad token file")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("error %q leaks the token", err)
			}
		})
	}
}

func TestLoadTokenFileAndAuthenticate(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "tokens.yaml")
	body := "tokens:\n  - token: yaml-token-0123456789\n    principal: {id: ci, type: service}\n    scopes:\n      - {tenant: acme, workspace: build}\n      - {tenant: acme, workspace: '*'}\n"
	if err := os.WriteFile(yml, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := LoadTokenFile(yml)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate("yaml-token-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	if id.Principal != (actor.Principal{ID: "ci", Type: actor.PrincipalService}) || id.DefaultScope != (actor.Scope{Tenant: "acme", Workspace: "build"}) || len(id.Scopes) != 2 {
		t.Fatalf("identity %+v", id)
	}

	for _, tc := range []struct{ name, token, msg string }{
		{"missing", "", "missing bearer token: send the header Authorization: Bearer <token>"},
		{"unknown", "yaml-token-0123456780", "unknown token"},
		{"prefix", "yaml-token", "unknown token"},
	} {
		_, err := a.Authenticate(tc.token)
		if st := status.Convert(err); st.Code() != codes.Unauthenticated || st.Message() != tc.msg {
			t.Errorf("%s: %v %q, want Unauthenticated %q", tc.name, st.Code(), st.Message(), tc.msg)
		}
	}
}

func TestGenerateDevTokenFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens.json")
	tok, err := GenerateDevTokenFile(p, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 64 {
		t.Fatalf("token %q is not 32 bytes of hex", tok)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	a, err := LoadTokenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Authenticate(tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Principal != (actor.Principal{ID: "dev", Type: actor.PrincipalUser}) || id.DefaultScope != (actor.Scope{Tenant: "dev", Workspace: DefaultWorkspace}) || !id.Security().Allows("dev", "anything") {
		t.Fatalf("identity %+v", id)
	}
	tok2, err := GenerateDevTokenFile(p, "dev")
	if err != nil || tok2 == tok {
		t.Fatalf("second token %q %v: must be fresh", tok2, err)
	}
	if _, err := GenerateDevTokenFile(p, "bad tenant"); err == nil {
		t.Fatal("accepted a bad tenant")
	}
}
