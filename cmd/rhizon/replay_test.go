package main

import (
	"strings"
	"testing"
)

// A `rhizon dev` node runs commands (a conflict among them) and is killed;
// `rhizon replay` over its data directory re-executes every shard's log
// with this binary and finds it identical; `replica reset` refuses a shard
// with no other replica; a replay of a directory that is not a node's is a
// usage error.
func TestCLI_ReplayOfADevNodeIsIdentical(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, dir)
	for i, args := range [][]string{
		{"send", "counter/c1", "add", `{"amount":5}`},
		{"send", "counter/c1", "add", `{"amount":2}`, "--expected-version", "1"},
		{"send", "counter/c2", "add", `{"amount":2}`, "--expected-version", "7"},
		{"send", "kv/doc", "create", `{"doc":{"a":1}}`},
		{"send", "lock/l", "acquire", `{"owner":"o","ttl_ms":30000}`},
	} {
		if _, code := p.rhizon(t, args...); code != 0 && i != 2 {
			t.Fatalf("%v: exit %d", args, code)
		}
	}
	out, _ := p.rhizon(t, "get", "counter/c1", "-o", "json")
	a := decode[struct {
		Address struct{ Tenant, Workspace string }
	}](t, out).Address
	p.kill()

	out, code := p.rhizon(t, "replay", "--data-dir", dir)
	if code != 0 || strings.Count(out, "identical") == 0 || strings.Contains(out, "DIVERGED") {
		t.Fatalf("replay: exit %d\n%s", code, out)
	}
	out, code = p.rhizon(t, "replay", "--data-dir", dir, "--tenant", a.Tenant, "--workspace", a.Workspace, "--entity", "counter/c1", "-o", "json")
	if code != 0 || !strings.Contains(out, `"identical": true`) {
		t.Fatalf("replay of one entity: exit %d\n%s", code, out)
	}
	// A dev node's shards have one replica: resetting it would lose them.
	if _, code := p.rhizon(t, "replica", "reset", "--data-dir", dir, "--shard", "0"); code != exitError {
		t.Fatalf("reset of a single-replica shard: exit %d, want %d", code, exitError)
	}
	if out, code := p.rhizon(t, "replay", "--data-dir", dir, "--shard", "0"); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("replay after a refused reset: exit %d\n%s", code, out)
	}
	if _, code := p.rhizon(t, "replay", "--data-dir", t.TempDir()); code != exitUsage {
		t.Fatalf("replay of an empty directory: exit %d, want %d", code, exitUsage)
	}
}
