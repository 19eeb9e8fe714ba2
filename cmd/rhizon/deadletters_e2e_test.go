package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

const (
	dlqTenantToken = "dlq-tenant-token-0123456789abcdef0123"
	dlqAdminToken  = "dlq-admin-token-0123456789abcdef01234"
)

// TestCLI_DeadLettersListAndRedrive: on a `rhizon dev` node, a producer's
// junk message (rejected at once) and its command for an actor type the
// node lacks (poison after 5 deliveries, about 8 s) are listed by
// `rhizon dead-letters list`, as a table and as JSON lines, a page at a
// time; `redrive` stores the poison one's command again, and says why for
// the rejected one and a sequence that does not exist, exiting 1. A tenant
// token is refused with the server's reason.
func TestCLI_DeadLettersListAndRedrive(t *testing.T) {
	t.Parallel()
	needBinary(t)
	dir := t.TempDir()
	// The dev node reads this file instead of writing its own: its first
	// token (a tenant's, the banner's) produces, the second operates.
	tokens, _ := json.Marshal(map[string]any{"tokens": []map[string]any{
		{"token": dlqTenantToken, "principal": map[string]string{"id": "dev", "type": "user"}, "scopes": []map[string]string{{"tenant": "dev", "workspace": "*"}}},
		{"token": dlqAdminToken, "role": "admin", "principal": map[string]string{"id": "ops", "type": "user"}},
	}})
	if err := os.WriteFile(filepath.Join(dir, "token.json"), tokens, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDev(t, dir)
	as := func(token string, args ...string) (string, string, int) {
		t.Helper()
		return rhizonEnv(t, []string{"RHIZON_ADDR=" + d.addr, "RHIZON_TOKEN=" + token}, append([]string{"dead-letters"}, args...)...)
	}

	if out, errOut, code := as(dlqAdminToken, "list"); code != 0 || !strings.Contains(out, "no dead letters after sequence 0") {
		t.Fatalf("list of none: exit %d\n%s%s", code, out, errOut)
	}
	for _, args := range [][]string{{"list"}, {"redrive", "1"}} {
		if out, errOut, code := as(dlqTenantToken, args...); code != exitError || !strings.Contains(errOut, "PermissionDenied") ||
			!strings.Contains(errOut, "needs a token with role admin") {
			t.Fatalf("%v with a tenant token: exit %d, want 1 and the server's PERMISSION_DENIED reason\n%s%s", args, code, out, errOut)
		}
	}

	poison := publishJunkAndPoison(t, d)

	byKind := map[string]gateway.JSONDeadLetter{}
	testkit.Poll{Timeout: 30 * time.Second, Every: 250 * time.Millisecond}.EventuallyNil(t, "a rejected and a poison dead letter listed", func() error {
		out, errOut, code := as(dlqAdminToken, "list", "--json")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errOut)
		}
		clear(byKind)
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var dl gateway.JSONDeadLetter
			if line == "" {
				continue
			}
			if err := json.Unmarshal([]byte(line), &dl); err != nil {
				return fmt.Errorf("line %q is not a dead letter: %v", line, err)
			}
			byKind[dl.Kind] = dl
		}
		if len(byKind) != 2 || byKind["poison"].Sequence == 0 || byKind["rejected"].Sequence == 0 {
			return fmt.Errorf("dead letters by kind: %v", byKind)
		}
		return nil
	})
	p, r := byKind["poison"], byKind["rejected"]
	if !p.Redrivable || !strings.Contains(string(p.Command), `"nosuch"`) || r.Redrivable || r.Body != "not a command" {
		t.Fatalf("JSON lines: poison %+v\nrejected %+v", p, r)
	}

	out, errOut, code := as(dlqAdminToken, "list")
	if code != 0 {
		t.Fatalf("list: exit %d\n%s", code, errOut)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rows[f[0]] = l
		}
	}
	for _, want := range []struct {
		seq  uint64
		cols string
	}{
		{p.Sequence, `poison\s+yes\s+cmd\.nosuch\.add\s+dev/default\s+nosuch/x\s+\S`},
		{r.Sequence, `rejected\s+no\s+-\s+-\s+-\s+\S`},
	} {
		re := regexp.MustCompile(fmt.Sprintf(`^%d\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+%d\s+%s`, want.seq, shard.Of(poison.Address.ToActor(), 4), want.cols))
		if !re.MatchString(rows[fmt.Sprint(want.seq)]) {
			t.Errorf("list: no row matching %s in\n%s", re, out)
		}
	}
	if !strings.HasPrefix(out, "SEQ ") || strings.Contains(out, "more:") {
		t.Errorf("list: want a header and no more pages:\n%s", out)
	}
	first := min(p.Sequence, r.Sequence)
	if out, _, code := as(dlqAdminToken, "list", "--limit", "1"); code != 0 || !strings.HasSuffix(out, fmt.Sprintf("more: --after %d\n", first)) ||
		strings.Count(out, "\n") != 3 {
		t.Errorf("list --limit 1: exit %d, want the first letter and `more: --after %d`:\n%s", code, first, out)
	}
	if out, _, code := as(dlqAdminToken, "list", "--limit", "1", "--all"); code != 0 || !strings.Contains(out, "nosuch/x") ||
		!strings.Contains(out, "rejected") || strings.Contains(out, "more:") {
		t.Errorf("list --limit 1 --all: exit %d, want both letters:\n%s", code, out)
	}

	// One redrive stores the command; the others fail, each saying why.
	bogus := p.Sequence + r.Sequence + 1000
	out, errOut, code = as(dlqAdminToken, "redrive", fmt.Sprint(r.Sequence), fmt.Sprint(bogus), fmt.Sprint(p.Sequence))
	if code != exitError {
		t.Errorf("redrive with failures: exit %d, want 1", code)
	}
	if want := fmt.Sprintf("%d: redriven: stored as %s sequence ", p.Sequence, stream.IngressStream); !strings.Contains(out, want) {
		t.Errorf("redrive: stdout lacks %q:\n%s", want, out)
	}
	for _, want := range []string{
		fmt.Sprintf("%d: not redriven: FAILED_PRECONDITION: ", r.Sequence), "rejected for good",
		fmt.Sprintf("%d: not redriven: NOT_FOUND: ", bogus), "rhizon dead-letters list",
		fmt.Sprintf("2 of 3 dead letters not redriven: %d (FAILED_PRECONDITION), %d (NOT_FOUND)", r.Sequence, bogus),
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("redrive: stderr lacks %q:\n%s", want, errOut)
		}
	}
	out, errOut, code = as(dlqAdminToken, "redrive", fmt.Sprint(p.Sequence), "--json")
	var again struct {
		Sequence  uint64 `json:"sequence"`
		Redriven  bool   `json:"redriven"`
		Stream    string `json:"stream"`
		Duplicate bool   `json:"duplicate"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &again) != nil || again.Sequence != p.Sequence || !again.Redriven || !again.Duplicate ||
		again.Stream != stream.IngressStream {
		t.Errorf("redrive again --json: exit %d, want a duplicate:\n%s%s", code, out, errOut)
	}
	if _, errOut, code := as(dlqAdminToken, "redrive", "0"); code != exitUsage || !strings.Contains(errOut, `SEQ "0"`) {
		t.Errorf("redrive 0: exit %d, want 2 naming the argument:\n%s", code, errOut)
	}
}

// A gateway whose node has no JetStream answers UNIMPLEMENTED; the CLI
// passes its reason on.
func TestCLI_DeadLettersWithoutJetStreamSaysSo(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := ingresstest.Start(t, ingresstest.Options{Logger: quiet}).Node
	auth, err := gateway.NewAuth("test", []gateway.TokenEntry{{Token: dlqAdminToken, Role: "admin", Principal: gateway.TokenPrincipal{ID: "ops", Type: "user"}}})
	if err != nil {
		t.Fatal(err)
	}
	// No Async: the node as `rhizon node --nats-addr off` serves it.
	addr := serveGateway(t, gateway.Config{Backend: n, Auth: auth, Logger: quiet})
	for _, args := range [][]string{{"list"}, {"redrive", "1", "2"}} {
		_, err := runCLIErr(t, deadLettersCmd(), "", append(args, "--addr", addr, "--token", dlqAdminToken)...)
		wantErr(t, err, exitError, "Unimplemented", "this node has no JetStream (--nats-addr off), so no dead letters")
	}
}
