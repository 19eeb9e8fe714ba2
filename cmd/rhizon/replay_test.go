package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A `rhizon dev` node runs commands (a conflict among them); `rhizon replay
// --entity` against the running node finds c1's shard identical (a tenant
// token may not replay a whole shard or another tenant's entity); the node
// is killed and `rhizon replay` over its data directory re-executes every shard's log
// with this binary and finds it identical; `replica reset` refuses a shard
// with no other replica; a replay of a directory that is not a node's is a
// usage error.
func TestCLI_ReplayOfADevNodeIsIdentical(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The dev tenant's token first (the one the CLI gets), and an admin's.
	const adminToken = "replay-admin-token-0123456789"
	tokens := `{"tokens": [
	  {"token": "replay-dev-token-0123456789", "principal": {"id": "dev", "type": "user"}, "scopes": [{"tenant": "dev", "workspace": "*"}]},
	  {"token": "` + adminToken + `", "role": "admin", "principal": {"id": "ops", "type": "user"}, "scopes": []}
	]}`
	if err := os.WriteFile(filepath.Join(dir, "token.json"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
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

	// Live, through the API (RHIZON_ADDR, no --data-dir): the running
	// node replays c1's shard up to its applied index.
	out, code := p.rhizon(t, "replay", "--entity", "counter/c1", "-o", "json")
	type shardReports struct {
		Shards []struct {
			Shard        uint32 `json:"shard"`
			To           uint64 `json:"to"`
			Compared     int    `json:"compared"`
			Identical    bool   `json:"identical"`
			RecordedHash string `json:"recorded_hash"`
			ReplayedHash string `json:"replayed_hash"`
			NodeID       string `json:"node_id"`
		} `json:"shards"`
	}
	live := decode[shardReports](t, out).Shards
	if code != 0 || len(live) != 1 || !live[0].Identical || live[0].Compared != 2 || live[0].NodeID == "" ||
		live[0].RecordedHash == "" || live[0].RecordedHash != live[0].ReplayedHash {
		t.Fatalf("live replay of counter/c1: exit %d\n%s", code, out)
	}
	// The text form names the index it reached and the hash there; the
	// shard may have moved on since the JSON replay (the relay records its
	// progress in the log), so the hashes must agree only at the same index.
	out, code = p.rhizon(t, "replay", "--entity", "counter/c1")
	m := regexp.MustCompile(`identical: .* to index (\d+); state hash ([0-9a-f]{64})`).FindStringSubmatch(out)
	if code != 0 || m == nil || (m[1] == fmt.Sprint(live[0].To) && m[2] != live[0].RecordedHash) {
		t.Fatalf("live replay, text: exit %d\n%s\nthe JSON replay: to %d hash %s", code, out, live[0].To, live[0].RecordedHash)
	}
	// The dev token is a tenant's: no whole shard, no other tenant's entity
	// (denied and audited), and not both modes at once.
	if _, code := p.rhizon(t, "replay", "--shard", "0"); code != exitError {
		t.Fatalf("live shard replay with a tenant token: exit %d, want %d", code, exitError)
	}
	if _, code := p.rhizon(t, "replay", "--entity", "counter/c1", "--tenant", "someone-else"); code != exitError {
		t.Fatalf("live replay of another tenant's entity: exit %d, want %d", code, exitError)
	}
	// An admin replays every shard, or one narrowed to a tenant.
	out, code = p.rhizon(t, "replay", "--token", adminToken, "-o", "json")
	if all := decode[shardReports](t, out).Shards; code != 0 || len(all) < 2 {
		t.Fatalf("live replay of every shard by an admin: exit %d\n%s", code, out)
	}
	if out, code := p.rhizon(t, "replay", "--token", adminToken, "--shard", fmt.Sprint(live[0].Shard), "--tenant", a.Tenant); code != 0 ||
		!strings.Contains(out, "identical") {
		t.Fatalf("live replay of shard %d by an admin: exit %d\n%s", live[0].Shard, code, out)
	}
	if _, code := p.rhizon(t, "replay", "--addr", p.addr, "--data-dir", dir); code != exitUsage {
		t.Fatalf("replay --addr --data-dir: exit %d, want %d", code, exitUsage)
	}
	p.kill()

	out, code = p.rhizon(t, "replay", "--data-dir", dir)
	if code != 0 || strings.Count(out, "identical") == 0 || strings.Contains(out, "DIVERGED") {
		t.Fatalf("replay: exit %d\n%s", code, out)
	}
	out, code = p.rhizon(t, "replay", "--data-dir", dir, "--tenant", a.Tenant, "--workspace", a.Workspace, "--entity", "counter/c1", "-o", "json")
	if code != 0 || !strings.Contains(out, `"identical": true`) {
		t.Fatalf("replay of one entity: exit %d\n%s", code, out)
	}
	// Offline, the stopped node's record says the same where it ends at
	// the live replay's index (the relay's acks may have moved it on).
	matched := false
	for _, off := range decode[shardReports](t, out).Shards {
		if off.Shard != live[0].Shard {
			continue
		}
		matched = true
		if off.To < live[0].To || (off.To == live[0].To && off.RecordedHash != live[0].RecordedHash) {
			t.Fatalf("offline replay %+v vs live %+v", off, live[0])
		}
	}
	if !matched {
		t.Fatalf("offline replay has no report of shard %d:\n%s", live[0].Shard, out)
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
