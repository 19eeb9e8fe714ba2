package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLI_RaftGroupsOnADevNode: `rhizon dev --shards 4` with RHIZON_RAFT_GROUPS=2
// (every flag has its variable) runs 2 Raft groups: status says so and
// shows each shard's group; commands to entities of every shard apply; a
// live replay by an admin covers each log once (2 reports, not 4), identical;
// after kill -9 the node restarts with its recorded groups even without
// the setting, and its data is intact; an offline replay finds each
// group's log identical.
func TestCLI_RaftGroupsOnADevNode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const adminToken = "groups-admin-token-0123456789"
	tokens := `{"tokens": [
	  {"token": "groups-dev-token-0123456789", "principal": {"id": "dev", "type": "user"}, "scopes": [{"tenant": "dev", "workspace": "*"}]},
	  {"token": "` + adminToken + `", "role": "admin", "principal": {"id": "ops", "type": "user"}, "scopes": []}
	]}`
	if err := os.WriteFile(filepath.Join(dir, "token.json"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startDev(t, dir, "RHIZON_RAFT_GROUPS=2")
	out, code := p.rhizon(t, "status", "--token", adminToken)
	if code != 0 || !strings.Contains(out, "shards 4 in 2 raft groups") || !strings.Contains(out, "SHARD  GROUP") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	const entities = 16
	for i := range entities {
		if _, code := p.rhizon(t, "send", fmt.Sprintf("counter/c%d", i), "add", fmt.Sprintf(`{"amount":%d}`, i+1)); code != 0 {
			t.Fatalf("send to c%d: exit %d", i, code)
		}
	}
	type reports struct {
		Shards []struct {
			Shard     uint32 `json:"shard"`
			Commands  int    `json:"commands"`
			Identical bool   `json:"identical"`
		} `json:"shards"`
	}
	out, code = p.rhizon(t, "replay", "--token", adminToken, "-o", "json")
	live := decode[reports](t, out).Shards
	commands := 0
	for _, r := range live {
		commands += r.Commands
		if !r.Identical {
			t.Fatalf("live replay: %+v", r)
		}
	}
	if code != 0 || len(live) != 2 || commands < entities {
		t.Fatalf("live replay: exit %d, %d reports holding %d commands; want one per group (2) holding the %d sends\n%s", code, len(live), commands, entities, out)
	}

	p.kill()
	p = startDev(t, dir) // startDev asks for 4 groups: the cluster map keeps 2
	if out, code := p.rhizon(t, "status", "--token", adminToken); code != 0 || !strings.Contains(out, "shards 4 in 2 raft groups") {
		t.Fatalf("status after restart: exit %d\n%s", code, out)
	}
	for i := range entities {
		out, code := p.rhizon(t, "get", fmt.Sprintf("counter/c%d", i), "-o", "json")
		got := decode[struct{ State struct{ Value int } }](t, out)
		if code != 0 || got.State.Value != i+1 {
			t.Fatalf("c%d after kill -9: exit %d, value %d, want %d", i, code, got.State.Value, i+1)
		}
	}
	p.kill()
	out, code = p.rhizon(t, "replay", "--data-dir", dir, "-o", "json")
	if offline := decode[reports](t, out).Shards; code != 0 || len(offline) != 2 || !offline[0].Identical || !offline[1].Identical {
		t.Fatalf("offline replay: exit %d\n%s", code, out)
	}
}

// TestCLI_ADevNodeRunsOneRaftGroupByDefault: without --raft-groups a new
// cluster gets one group per node it is created with, so a dev node carries
// its 4 shards in one group; --raft-groups equal to the shard count asks for
// one group per shard.
func TestCLI_ADevNodeRunsOneRaftGroupByDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"RHIZON_RAFT_GROUPS=0"}, "shards 4 in 1 raft group "}, // 0: the default
		{[]string{"RHIZON_RAFT_GROUPS=4"}, "shards 4  "},
	} {
		dir := t.TempDir()
		p := startDev(t, dir, tc.env...)
		out, code := p.rhizon(t, "status")
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Fatalf("%v: status: exit %d, want %q\n%s", tc.env, code, tc.want, out)
		}
		p.kill()
	}
}
