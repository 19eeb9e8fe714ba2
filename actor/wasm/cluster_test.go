package wasm_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/wasm"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

// TestClusterReplicasAgree: a real 3-node cluster (Raft over TCP, Badger),
// each node with its own WASM counter and probe, takes commands through the
// gateway, traps and budget overruns among them; every shard's three
// replicas reach the same applied index with the same state hash.
func TestClusterReplicasAgree(t *testing.T) {
	counter, probe := counterModule(t), probeModule(t)
	const token = "wasm-cluster-test-token-0123"
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: 2,
		Tokens: []gateway.TokenEntry{{Token: token, Principal: gateway.TokenPrincipal{ID: "u", Type: "user"},
			Scopes: []gateway.TokenScope{{Tenant: "acme", Workspace: "*"}}}},
		Registry: func(int) *actor.Registry {
			return registry(t, load(t, "wcounter", counter, wasm.Config{}), load(t, "probe", probe, wasm.Config{Fuel: 50_000_000}))
		},
	})
	c.WaitSettled(t)
	cl, err := client.DialCluster(c.Addrs(), client.WithToken(token), client.WithRetries(10))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	submit := func(typ, id, verb, payload string) *pb.Result {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := cl.Submit(ctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: typ, EntityId: id},
			Type: actor.CommandType(typ, verb), Payload: []byte(payload)})
		if err != nil {
			t.Fatalf("%s/%s %s: %v", typ, id, verb, err)
		}
		return resp.GetResult()
	}
	for i := range 30 {
		if r := submit("wcounter", fmt.Sprint("c", i%7), "add", `{"amount":3}`); r.GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("add: %v", r)
		}
		if i%5 == 0 {
			if r := submit("probe", fmt.Sprint("p", i%3), "spin", `{}`); r.GetCode() != actor.CodeBudgetExceeded {
				t.Fatalf("spin: %v", r)
			}
			if r := submit("probe", fmt.Sprint("p", i%3), "panic", `{}`); r.GetCode() != actor.CodeTrap {
				t.Fatalf("panic: %v", r)
			}
			submit("probe", fmt.Sprint("p", i%3), "count", `{}`)
		}
	}
	testkit.Poll{Timeout: 30 * time.Second}.EventuallyNil(t, "every replica of every shard at one index and hash", func() error {
		for id := range uint32(2) {
			var first string
			replicas := 0
			for _, n := range c.Nodes {
				for _, sh := range n.Node.Shards() {
					if sh.ID() != id {
						continue
					}
					replicas++
					m := sh.Meta()
					got := fmt.Sprintf("index %d hash %x", m.Index, m.Hash)
					if first == "" {
						first = got
					} else if got != first {
						return fmt.Errorf("shard %d: %s on %s, another replica %s", id, got, n.ID, first)
					}
				}
			}
			if replicas != 3 {
				return fmt.Errorf("shard %d has %d replicas, want 3", id, replicas)
			}
		}
		return nil
	})
}
