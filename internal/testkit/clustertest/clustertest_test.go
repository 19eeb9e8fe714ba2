package clustertest

import (
	"slices"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/gateway"
)

func TestSingleNodeLeadsEveryShardUntilKilled(t *testing.T) {
	c := Start(t, Options{Nodes: 1, Shards: 3, Tokens: []gateway.TokenEntry{{
		Token: "clustertest-token-0123456789", Principal: gateway.TokenPrincipal{ID: "t", Type: "user"},
		Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}},
	}}})
	if got := c.Leaders(); !slices.Equal(got, []string{"n1", "n1", "n1"}) {
		t.Fatalf("leaders %v of a ready single node", got)
	}
	if n, err := c.Leader(2); err != nil || n != c.Nodes[0] {
		t.Fatalf("Leader(2) = %v, %v", n, err)
	}
	if _, err := c.Leader(3); err == nil {
		t.Fatal("Leader of shard 3 of 3: no error")
	}
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(0); err != nil {
		t.Fatalf("second kill: %v", err)
	}
	if len(c.Live()) != 0 || c.Nodes[0].Alive() {
		t.Fatal("a killed node is live")
	}
	if got := c.Leaders(); !slices.Equal(got, []string{"", "", ""}) {
		t.Fatalf("leaders %v with every node dead", got)
	}
	if _, err := c.Leader(0); err == nil || !strings.Contains(err.Error(), "no single leader") {
		t.Fatalf("Leader(0) with every node dead: %v", err)
	}
}
