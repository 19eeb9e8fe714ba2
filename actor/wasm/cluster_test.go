package wasm_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// TestClusterUpcast: on a real 3-node cluster, revision 1 of a WASM type
// (base) records schema version 1; revision 2 is activated through the
// control group and records version 2 from the state revision 1 wrote;
// History through every node's gateway shows the old event upcast by
// revision 2's module; every shard's replicas agree; an event the upcaster
// traps on makes History Internal, naming it.
func TestClusterUpcast(t *testing.T) {
	m1, m2 := profileModules(t)
	const token = "wasm-cluster-test-token-0123"
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: 2,
		Tokens: []gateway.TokenEntry{{Token: token, Principal: gateway.TokenPrincipal{ID: "u", Type: "user"}, Role: "admin",
			Scopes: []gateway.TokenScope{{Tenant: "acme", Workspace: "*"}}}},
		Registry: func(int) *actor.Registry {
			r := registry(t)
			for _, b := range []actor.Behavior{loadRev(t, "profile", "1", m1), loadRev(t, "profile", "2", m2)} {
				if err := r.AddRevision(b); err != nil {
					t.Fatal(err)
				}
			}
			return r
		},
	})
	c.WaitSettled(t)
	cl, err := client.DialCluster(c.Addrs(), client.WithToken(token), client.WithRetries(10))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	submit := func(id, verb, payload string) error {
		resp, err := cl.Submit(ctx(), &pb.SubmitRequest{Address: &pb.Address{ActorType: "profile", EntityId: id},
			Type: actor.CommandType("profile", verb), Payload: []byte(payload), IdempotencyKey: id + verb})
		if err != nil {
			return err
		}
		if resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			return fmt.Errorf("%s %s: %v", id, verb, resp.GetResult())
		}
		return nil
	}
	for id, name := range map[string]string{"p1": "Ada Lovelace", "p2": "panic now"} {
		if err := submit(id, "name", `{"name":"`+name+`"}`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Nodes[1].Node.ActivateRevision(ctx(), &pb.ActivateRevisionRequest{ActorType: "profile", Revision: "2"}); err != nil {
		t.Fatal(err)
	}
	testkit.Poll{Timeout: 30 * time.Second}.EventuallyNil(t, "revision 2 takes split", func() error {
		return submit("p1", "split", `{"last":"Byron"}`)
	})
	want := []string{`{"first":"Ada","last":"Lovelace"}`, `{"first":"Ada","last":"Byron"}`}
	for _, n := range c.Nodes {
		nc, err := client.Dial(n.Addr, client.WithToken(token))
		if err != nil {
			t.Fatal(err)
		}
		h, err := nc.History(ctx(), &pb.HistoryRequest{Address: &pb.Address{ActorType: "profile", EntityId: "p1"}})
		if err != nil || len(h.GetRecords()) != 2 {
			t.Fatalf("history on %s: %v %v", n.ID, h, err)
		}
		for i, r := range h.GetRecords() {
			if ev := r.GetEvent(); ev.GetSchemaVersion() != 2 || string(ev.GetPayload()) != want[i] {
				t.Errorf("history on %s [%d]: v%d %s; want v2 %s", n.ID, i, ev.GetSchemaVersion(), ev.GetPayload(), want[i])
			}
		}
		_, err = nc.History(ctx(), &pb.HistoryRequest{Address: &pb.Address{ActorType: "profile", EntityId: "p2"}})
		if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "upcaster cannot read panic now") {
			t.Errorf("history of the trapping event on %s: %v", n.ID, err)
		}
		_ = nc.Close()
	}
	testkit.Poll{Timeout: 30 * time.Second}.EventuallyNil(t, "every shard's replicas at one index and hash", func() error {
		for id := range uint32(2) {
			seen := map[string]bool{}
			for _, n := range c.Nodes {
				for _, sh := range n.Node.Shards() {
					if sh.ID() == id {
						m := sh.Meta()
						seen[fmt.Sprintf("%d %x", m.Index, m.Hash)] = true
					}
				}
			}
			if len(seen) != 1 {
				return fmt.Errorf("shard %d: %v", id, seen)
			}
		}
		return nil
	})
}
