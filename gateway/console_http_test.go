package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// fullStatus is a backend status with everything a tenant must not see:
// indexes, state hashes, placement, rebalancing, zones.
func fullStatus() *pb.StatusResponse {
	return &pb.StatusResponse{
		ShardCount: 2, ClusterId: "c-1", MapVersion: 7, Rebalancing: []string{"shard 1: learner n3 catching up"},
		Nodes: []*pb.NodeStatus{
			{NodeId: "n1", State: "alive", Zone: "z1", GrpcAddr: "127.0.0.1:1", Leading: 1, Replicas: 2},
			{NodeId: "n2", State: "dead", Zone: "z2", GrpcAddr: "127.0.0.1:2"},
		},
		Shards: []*pb.ShardStatus{
			{Shard: 0, NodeId: "n1", Role: "Leader", Leader: "n1", Term: 3, AppliedIndex: 41, CommitIndex: 41, StateHash: "abc", Voters: []string{"n1", "n2"}},
			{Shard: 1, NodeId: "n1", Role: "Follower", Leader: "n2", Term: 2, AppliedIndex: 9, CommitIndex: 12, StateHash: "def", Voters: []string{"n1", "n2"}},
		},
	}
}

func TestConsoleClusterRoute(t *testing.T) {
	h := newHarness(t)
	h.be.status = fullStatus()

	t.Run("no token", func(t *testing.T) {
		code, body := httpCall(t, h, "GET", "/v1/cluster", "", "")
		if code != 401 || !strings.Contains(string(body), "unauthenticated") {
			t.Fatalf("got %d %s, want 401 unauthenticated", code, body)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		code, _ := httpCall(t, h, "GET", "/v1/cluster", "not-a-token-0123456789", "")
		if code != 401 {
			t.Fatalf("got %d, want 401", code)
		}
	})
	t.Run("POST", func(t *testing.T) {
		code, body := httpCall(t, h, "POST", "/v1/cluster", tokAdmin, "{}")
		if code != 405 || !strings.Contains(string(body), "takes GET") {
			t.Fatalf("got %d %s, want 405", code, body)
		}
	})
	t.Run("admin sees everything", func(t *testing.T) {
		code, body := httpCall(t, h, "GET", "/v1/cluster", tokAdmin, "")
		if code != 200 {
			t.Fatalf("got %d %s", code, body)
		}
		var st struct {
			Nodes []struct {
				NodeID string `json:"node_id"`
				State  string `json:"state"`
				Zone   string `json:"zone"`
			} `json:"nodes"`
			Shards []struct {
				Shard        int      `json:"shard"`
				Role         string   `json:"role"`
				Leader       string   `json:"leader"`
				AppliedIndex string   `json:"applied_index"` // protojson: 64-bit as strings
				Voters       []string `json:"voters"`
			} `json:"shards"`
			Rebalancing []string `json:"rebalancing"`
			Health      string   `json:"health"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if len(st.Nodes) != 2 || st.Nodes[1].State != "dead" || st.Nodes[0].Zone != "z1" {
			t.Fatalf("nodes %+v", st.Nodes)
		}
		if len(st.Shards) != 2 || st.Shards[0].AppliedIndex != "41" || len(st.Shards[1].Voters) != 2 || st.Shards[1].Leader != "n2" {
			t.Fatalf("shards %+v", st.Shards)
		}
		if len(st.Rebalancing) != 1 || st.Health == "" {
			t.Fatalf("rebalancing %v health %q", st.Rebalancing, st.Health)
		}
	})
	t.Run("tenant gets the tenant view", func(t *testing.T) {
		code, body := httpCall(t, h, "GET", "/v1/cluster", tokAlice, "")
		if code != 200 {
			t.Fatalf("got %d %s", code, body)
		}
		for _, secret := range []string{`"abc"`, `"41"`, "learner n3", `"z1"`, `"c-1"`} {
			if strings.Contains(string(body), secret) {
				t.Errorf("a tenant's /v1/cluster shows %s: %s", secret, body)
			}
		}
		if !strings.Contains(string(body), `"leader":"n2"`) || !strings.Contains(string(body), `"state":"dead"`) {
			t.Errorf("a tenant's /v1/cluster lacks leaders or node states: %s", body)
		}
	})
}

func TestConsoleWhoAmIRoute(t *testing.T) {
	h := newHarness(t)
	if code, _ := httpCall(t, h, "GET", "/v1/whoami", "", ""); code != 401 {
		t.Fatalf("no token: got %d, want 401", code)
	}
	cases := []struct {
		token, id, role, tenant, workspace string
		scopes                             int
	}{
		{tokAlice, "alice", "tenant", "acme", "default", 1},
		{tokOps, "ops", "tenant", "acme", "default", 2},
		{tokAdmin, "root", "admin", "", "", 0},
	}
	for _, tc := range cases {
		code, body := httpCall(t, h, "GET", "/v1/whoami", tc.token, "")
		if code != 200 {
			t.Fatalf("%s: got %d %s", tc.id, code, body)
		}
		var w JSONWhoAmI
		if err := json.Unmarshal(body, &w); err != nil {
			t.Fatal(err)
		}
		if w.Principal.ID != tc.id || w.Role != tc.role || w.DefaultTenant != tc.tenant ||
			w.DefaultWorkspace != tc.workspace || len(w.Scopes) != tc.scopes {
			t.Errorf("%s: got %+v", tc.id, w)
		}
		if strings.Contains(string(body), tc.token) {
			t.Errorf("%s: whoami echoes the token", tc.id)
		}
	}
}
