package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
)

func userRegistry(t testing.TB, spec string) *actor.Registry {
	t.Helper()
	specs, err := builtin.ParseDocumentTypes(spec)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := builtin.RegistryWith(specs)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

var listTokens = []gateway.TokenEntry{
	{Token: tokenA, Principal: gateway.TokenPrincipal{ID: "alice", Type: "user"}, Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}}},
	{Token: tokenB, Principal: gateway.TokenPrincipal{ID: "bob", Type: "service"}, Scopes: []gateway.TokenScope{{Tenant: "b", Workspace: "main"}}},
}

func dialList(t testing.TB, addr, token string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, append([]client.Option{client.WithToken(token)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func userCreate(id string, age int) *pb.SubmitRequest {
	return &pb.SubmitRequest{
		Address: &pb.Address{ActorType: "user", EntityId: id}, Type: "cmd.user.create",
		Payload: fmt.Appendf(nil, `{"doc":{"age":%d}}`, age), IdempotencyKey: "c-" + id,
	}
}

// pageAll follows the page tokens of req to the end and returns the ids in
// order.
func pageAll(t *testing.T, c *client.Client, req *pb.ListRequest) []string {
	t.Helper()
	var ids []string
	for {
		resp, err := c.List(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range resp.GetItems() {
			ids = append(ids, it.GetId())
		}
		if resp.GetNextPageToken() == "" {
			return ids
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// On a 3-node cluster (8 shards, real Raft and Badger), List merges every
// shard by id; another tenant's token sees none of it (and naming the tenant
// is PERMISSION_DENIED); pages taken while other documents are created,
// patched and deleted never repeat an id nor miss one that existed
// throughout, by id and by an indexed field.
func TestList_ScopedAndPagedAcrossShardsWhileWriting(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: 8, ShardTemplate: testShardConfig(), Tokens: listTokens,
		Registry: func(int) *actor.Registry { return userRegistry(t, "user:age") },
	})
	a := dialList(t, c.Nodes[0].Addr, tokenA, client.WithTenant("a"), client.WithWorkspace("w"))
	var stable []string
	for i := range 60 {
		id := fmt.Sprintf("u%02d", i)
		if _, err := a.Submit(ctx(t), userCreate(id, i%10)); err != nil {
			t.Fatal(err)
		}
		stable = append(stable, id)
	}

	// Every shard holds some: the list is a merge.
	first, err := a.List(ctx(t), &pb.ListRequest{ActorType: "user", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	shards := map[uint32]bool{}
	for _, it := range first.GetItems() {
		shards[it.GetShard()] = true
	}
	if got := pageAll(t, a, &pb.ListRequest{ActorType: "user", Limit: 1000}); !slices.Equal(got, stable) || first.GetCount() != 60 || len(shards) < 4 || len(first.GetAppliedIndexes()) != 8 {
		t.Fatalf("list = %v (count %d, %d shards, applied %v)", got, first.GetCount(), len(shards), first.GetAppliedIndexes())
	}

	// Scope: tenant b's token lists its own workspace (empty), and may not
	// name tenant a.
	b := dialList(t, c.Nodes[1].Addr, tokenB)
	if resp, err := b.List(ctx(t), &pb.ListRequest{ActorType: "user"}); err != nil || len(resp.GetItems()) != 0 || resp.GetCount() != 0 {
		t.Fatalf("tenant b lists %v (count %d), err %v; want nothing", resp.GetItems(), resp.GetCount(), err)
	}
	if _, err := b.List(ctx(t), &pb.ListRequest{Tenant: "a", Workspace: "w", ActorType: "user"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("tenant b naming tenant a: %v, want PermissionDenied", err)
	}

	// Writers churn other documents (w*: created, patched, deleted; u*
	// patched without moving in the id order) while pages are read.
	wctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes atomic.Int64
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wc := dialList(t, c.Nodes[w+1].Addr, tokenA, client.WithTenant("a"), client.WithWorkspace("w"))
			for i := 0; wctx.Err() == nil; i++ {
				id := fmt.Sprintf("w%d-%03d", w, i)
				if _, err := wc.Submit(wctx, userCreate(id, i%10)); err != nil {
					return
				}
				if i%2 == 0 {
					_, _ = wc.Submit(wctx, &pb.SubmitRequest{Address: &pb.Address{ActorType: "user", EntityId: id}, Type: "cmd.user.delete", IdempotencyKey: "d-" + id})
				}
				_, _ = wc.Submit(wctx, &pb.SubmitRequest{
					Address: &pb.Address{ActorType: "user", EntityId: stable[i%60]}, Type: "cmd.user.patch",
					Payload: fmt.Appendf(nil, `{"patch":{"note":%d}}`, i), IdempotencyKey: fmt.Sprintf("p-%d-%d", w, i),
				})
				writes.Add(1)
			}
		}()
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	testkit.Poll{Timeout: 30 * time.Second, Every: 10 * time.Millisecond}.Eventually(t, "writers running", func() (bool, string) {
		return writes.Load() >= 5, fmt.Sprint(writes.Load(), " writes")
	})
	check := func(what string, ids []string, sorted bool) {
		t.Helper()
		seen := map[string]bool{}
		for i, id := range ids {
			if seen[id] {
				t.Fatalf("%s: %s twice: %v", what, id, ids)
			}
			seen[id] = true
			if sorted && i > 0 && ids[i-1] >= id {
				t.Fatalf("%s: out of order at %d: %v", what, i, ids)
			}
		}
		for _, id := range stable {
			if !seen[id] {
				t.Fatalf("%s: %s missing: %v", what, id, ids)
			}
		}
	}
	for round := range 3 {
		check(fmt.Sprint("by id, round ", round), pageAll(t, a, &pb.ListRequest{ActorType: "user", Limit: 7}), true)
		check(fmt.Sprint("by age, round ", round), pageAll(t, a, &pb.ListRequest{ActorType: "user", Limit: 7,
			Where: []*pb.ListWhere{{Field: "age", Op: ">=", Value: "0"}}}), false)
	}
	before := writes.Load()
	stop()
	wg.Wait()
	if before < 10 {
		t.Fatalf("only %d writes ran during the paging", before)
	}
	// Quiet again: the index agrees with the documents (w*-even deleted).
	got := pageAll(t, a, &pb.ListRequest{ActorType: "user", Where: []*pb.ListWhere{{Field: "age", Op: "=", Value: "3"}}, Limit: 1000})
	for _, id := range got {
		if !strings.HasPrefix(id, "u") && !strings.HasPrefix(id, "w") {
			t.Fatalf("age=3 lists %s", id)
		}
	}
	if !slices.Contains(got, "u03") || !slices.Contains(got, "u53") || slices.Contains(got, "u04") {
		t.Fatalf("age=3 = %v", got)
	}
}

// A node that declares other document types is reported: its peers' status
// names it and says what differs; it is FAILED (it differs from both peers),
// they are DEGRADED (each differs from one of two).
func TestList_DocumentTypeMismatchIsReported(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 3, Shards: 2, ShardTemplate: testShardConfig(), Tokens: listTokens,
		Registry: func(i int) *actor.Registry {
			if i == 2 {
				return userRegistry(t, "user:age,email;invoice")
			}
			return userRegistry(t, "user:age")
		},
	})
	testkit.Poll{Timeout: 30 * time.Second, Every: 50 * time.Millisecond}.EventuallyNil(t, "n1 reports n3", func() error {
		st, err := c.Nodes[0].Node.Status(ctx(t))
		if err != nil {
			return err
		}
		m := strings.Join(st.GetDocumentTypeMismatches(), " | ")
		if !strings.Contains(m, "node n3") || !strings.Contains(m, "user is indexed on age,email there, indexed on age here") || !strings.Contains(m, "invoice is declared there, not here") {
			return fmt.Errorf("mismatches %q", m)
		}
		if h := gateway.AssessHealth(st); h.State != gateway.HealthDegraded {
			return fmt.Errorf("n1 health %s %v", h.State, h.Reasons)
		}
		st3, err := c.Nodes[2].Node.Status(ctx(t))
		if err != nil {
			return err
		}
		if h := gateway.AssessHealth(st3); h.State != gateway.HealthFailed || !strings.Contains(strings.Join(h.Reasons, " "), "node n1 declares other document types") {
			return fmt.Errorf("n3 health %s %v", h.State, h.Reasons)
		}
		return nil
	})
}

// Pages of large documents end at the byte bounds (each shard's, then the
// page's) and still return every id once, in order: a page stops at the
// smallest last id of the shards that had more.
func TestList_LargeDocumentsPageByBytes(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 1, Shards: 4, ShardTemplate: testShardConfig(), Tokens: listTokens,
		Registry: func(int) *actor.Registry { return userRegistry(t, "user") },
	})
	a := dialList(t, c.Nodes[0].Addr, tokenA, client.WithTenant("a"), client.WithWorkspace("w"))
	big := strings.Repeat("x", 900<<10)
	var want []string
	for i := range 40 {
		id := fmt.Sprintf("d%02d", i)
		if _, err := a.Submit(ctx(t), &pb.SubmitRequest{
			Address: &pb.Address{ActorType: "user", EntityId: id}, Type: "cmd.user.create",
			Payload: fmt.Appendf(nil, `{"doc":{"blob":%q}}`, big), IdempotencyKey: "c-" + id,
		}); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	req := &pb.ListRequest{ActorType: "user", Limit: 1000}
	var got []string
	pages := 0
	for {
		resp, err := a.List(ctx(t), req, grpc.MaxCallRecvMsgSize(64<<20))
		if err != nil {
			t.Fatal(err)
		}
		pages++
		size := 0
		for _, it := range resp.GetItems() {
			got = append(got, it.GetId())
			size += len(it.GetState())
		}
		if size > cluster.ListPageBytes+len(big)+64 || resp.GetCount() != 40 {
			t.Fatalf("page %d: %d bytes, count %d", pages, size, resp.GetCount())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if !slices.Equal(got, want) || pages < 3 {
		t.Fatalf("%d pages: %v", pages, got)
	}
}
