package cluster_test

import (
	"fmt"
	"testing"

	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/gateway"
)

var _ gateway.RouteHinter = (*cluster.Node)(nil)

// TestNode_LeaderHintAndForwardCount: a node that leads every shard has no
// hint to give and forwards nothing. (The 3-node behaviour, hints and
// forwards included, is tested with the client's leader routing in
// client/route_cluster_test.go.)
func TestNode_LeaderHintAndForwardCount(t *testing.T) {
	tn := startNode(t, t.TempDir(), 4)
	c := tn.client(t, tokenA)
	for i := range 8 {
		if _, err := c.Submit(ctx(t), submit("counter", fmt.Sprintf("c%d", i), "add", "", `{"amount":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	for id := range uint32(4) {
		if node, addr, remote := tn.node.LeaderHint(id); remote || node != "n1" || addr != tn.addr {
			t.Errorf("shard %d: hint %q %q remote %v, want n1 itself", id, node, addr, remote)
		}
	}
	if n := tn.node.Forwarded(); n != 0 {
		t.Errorf("a single node forwarded %d requests", n)
	}
}
