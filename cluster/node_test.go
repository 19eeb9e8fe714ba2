package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/internal/testkit/clustertest"
	"github.com/rhizon/rhizon/shard"
	"github.com/rhizon/rhizon/storage"
)

const (
	tokenA   = "token-for-tenant-a-0123456789"
	tokenB   = "token-for-tenant-b-0123456789"
	tokenSys = "token-for-system-0123456789"
	// tokenAudit reads the audit streams (engine.AuditAddress).
	tokenAudit = "token-for-audit-0123456789"
)

// testNode is a real node (Raft, Badger on disk) behind a real gRPC server on
// 127.0.0.1.
type testNode struct {
	*clustertest.Node
	node *cluster.Node
	addr string
	http string // base URL of the HTTP/JSON gateway
}

func testShardConfig() shard.Config {
	return shard.Config{
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, TickInterval: 20 * time.Millisecond,
	}
}

func startNode(t testing.TB, dir string, shards uint32) *testNode {
	t.Helper()
	return startNodeWith(t, dir, shards, func(*gateway.Config) {})
}

// startNodeWith is startNode with the gateway's config adjusted by tune.
func startNodeWith(t testing.TB, dir string, shards uint32, tune func(*gateway.Config)) *testNode {
	t.Helper()
	c := clustertest.Start(t, clustertest.Options{
		Nodes: 1, Shards: shards, ShardTemplate: testShardConfig(), Gateway: tune, Graceful: true,
		DataDir: func(int) string { return dir },
		Tokens: []gateway.TokenEntry{
			{Token: tokenA, Principal: gateway.TokenPrincipal{ID: "alice", Type: "user"}, Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}}},
			{Token: tokenB, Principal: gateway.TokenPrincipal{ID: "bob", Type: "service"}, Scopes: []gateway.TokenScope{{Tenant: "b", Workspace: "main"}}},
			{Token: tokenSys, Principal: gateway.TokenPrincipal{ID: "ops", Type: "system"}, Scopes: []gateway.TokenScope{{Tenant: "a", Workspace: "*"}}},
			{Token: tokenAudit, Principal: gateway.TokenPrincipal{ID: "auditor", Type: "user"},
				Scopes: []gateway.TokenScope{{Tenant: engine.AuditTenant, Workspace: engine.AuditWorkspace}}},
		},
	})
	n := c.Nodes[0]
	// Registered after the harness's cleanup, so it runs before the node
	// stops.
	hs := httptest.NewServer(n.Gateway.HTTPHandler())
	t.Cleanup(hs.Close)
	return &testNode{Node: n, node: n.Node, addr: n.Addr, http: hs.URL}
}

func (tn *testNode) client(t testing.TB, token string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(tn.addr, append([]client.Option{client.WithToken(token)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// appliedTotal sums the applied indexes of every shard: it moves only when
// something reached the log.
func (tn *testNode) appliedTotal() uint64 {
	var sum uint64
	for _, s := range tn.node.Shards() {
		sum += s.Meta().Index
	}
	return sum
}

// raw calls Submit through the generated stub, without the client library's
// help (it would fill in a missing idempotency key).
func (tn *testNode) raw(t testing.TB, token string, req *pb.SubmitRequest) error {
	t.Helper()
	conn, err := grpc.NewClient(tn.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := ctx(t)
	if token != "" {
		c = metadata.AppendToOutgoingContext(c, "authorization", "Bearer "+token)
	}
	_, err = pb.NewGatewayClient(conn).Submit(c, req)
	return err
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func submit(actorType, id, verb, key, payload string) *pb.SubmitRequest {
	return &pb.SubmitRequest{
		Address: &pb.Address{ActorType: actorType, EntityId: id},
		Type:    actor.CommandType(actorType, verb), Payload: []byte(payload), IdempotencyKey: key,
	}
}

func TestNode_SubmitGetHistoryOverGRPC(t *testing.T) {
	tn := startNode(t, t.TempDir(), 4)
	c := tn.client(t, tokenA)
	for i := range 3 {
		resp, err := c.Submit(ctx(t), submit("counter", "c1", "add", fmt.Sprint("k", i), `{"amount":2}`))
		if err != nil {
			t.Fatal(err)
		}
		if r := resp.Result; r.Status != pb.Status_STATUS_ACCEPTED || r.Version != uint64(i+1) {
			t.Fatalf("submit %d: %+v", i, r)
		}
	}
	got, err := c.Get(ctx(t), &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Value int64 }
	if err := json.Unmarshal(got.State, &st); err != nil || st.Value != 6 || got.Version != 3 || !got.Found {
		t.Fatalf("get: %+v (%v)", got, err)
	}
	h, err := c.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Records) != 2 || h.NextPageToken == "" {
		t.Fatalf("first page: %d records, token %q", len(h.Records), h.NextPageToken)
	}
	h2, err := c.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, PageSize: 2, PageToken: h.NextPageToken})
	if err != nil {
		t.Fatal(err)
	}
	if len(h2.Records) != 1 || h2.Records[0].GetEvent().GetVersion() != 3 || h2.NextPageToken != "" {
		t.Fatalf("second page: %+v", h2)
	}
}

func TestNode_HTTPJSONGateway(t *testing.T) {
	tn := startNode(t, t.TempDir(), 2)
	call := func(path, body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, tn.http+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tokenA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, out
	}
	code, out := call("/v1/submit", `{"address":{"actor_type":"kv","entity_id":"d"},"type":"cmd.kv.create","payload":{"doc":{"x":1}},"idempotency_key":"h1"}`)
	if code != 200 || out["result"].(map[string]any)["status"] != "accepted" {
		t.Fatalf("submit over HTTP: %d %v", code, out)
	}
	code, out = call("/v1/get", `{"address":{"actor_type":"kv","entity_id":"d"}}`)
	if code != 200 || fmt.Sprint(out["state"]) != "map[doc:map[x:1] exists:true]" {
		t.Fatalf("get over HTTP: %d %v", code, out)
	}
	code, out = call("/v1/submit", `{"address":{"actor_type":"kv","entity_id":"d"},"type":"cmd.kv.create","payload":{"doc":`)
	if code != 400 || out["code"] != "invalid_argument" {
		t.Fatalf("malformed body over HTTP: %d %v", code, out)
	}
}

func TestPromise_Isolation_TokenForTenantACannotTouchTenantB(t *testing.T) {
	tn := startNode(t, t.TempDir(), 4)
	a, b := tn.client(t, tokenA), tn.client(t, tokenB)
	if _, err := b.Submit(ctx(t), submit("counter", "secret", "add", "kb", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	target := &pb.Address{Tenant: "b", Workspace: "main", ActorType: "counter", EntityId: "secret"}
	req := submit("counter", "secret", "add", "ka", `{"amount":1000}`)
	req.Address = target
	_, errSubmit := a.Submit(ctx(t), req)
	_, errGet := a.Get(ctx(t), &pb.GetRequest{Address: target})
	_, errHist := a.History(ctx(t), &pb.HistoryRequest{Address: target})
	for name, err := range map[string]error{"submit": errSubmit, "get": errGet, "history": errHist} { //rhizon:deterministic test
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), `tenant "a"`) {
			t.Errorf("%s across tenants: %v (want PermissionDenied naming the allowed tenant)", name, err)
		}
	}
	// Tenant B's state is untouched and its history holds none of the
	// attempts: they are in alice's audit stream, which the operator reads
	// on every shard.
	got, err := b.Get(ctx(t), &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "secret"}})
	if err != nil || got.Version != 1 {
		t.Fatalf("tenant b entity after attacks: %+v %v", got, err)
	}
	h, err := b.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "secret"}, IncludeRejections: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Records) != 1 {
		t.Fatalf("tenant b's history has %d records, want its one event: %v", len(h.Records), h.Records)
	}
	auditor := tn.client(t, tokenAudit)
	violations := 0
	for s := range uint32(4) {
		a := engine.AuditAddress("alice", s, 4)
		h, err := auditor.History(ctx(t), &pb.HistoryRequest{Address: pb.FromAddress(a), IncludeRejections: true})
		if err != nil {
			t.Fatalf("audit stream %s: %v", a, err)
		}
		for _, r := range h.Records {
			if rj := r.GetRejection(); rj != nil && rj.Type == engine.ViolationEventType && rj.GetPrincipal().GetId() == "alice" &&
				rj.GetAddress().GetEntityId() == "secret" {
				violations++
			}
		}
	}
	if violations != 3 {
		t.Fatalf("alice's audit streams hold %d violations, want 3 (submit, get, history)", violations)
	}
}

func TestGateway_BadInputGetsPreciseStatusAndNothingPersisted(t *testing.T) {
	tn := startNode(t, t.TempDir(), 2)
	good := tn.client(t, tokenA)
	if _, err := good.Submit(ctx(t), submit("counter", "c1", "add", "seed", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	big := `{"amount":1,"pad":"` + strings.Repeat("x", actor.MaxPayloadBytes) + `"}`
	onBehalf := submit("counter", "c1", "add", "k", `{"amount":1}`)
	onBehalf.OnBehalfOf = &pb.Principal{Id: "eve", Type: "user"}
	badType := submit("counter", "c1", "add", "k", `{"amount":1}`)
	badType.OnBehalfOf = &pb.Principal{Id: "eve", Type: "robot"}
	cases := []struct {
		name  string
		token string
		req   *pb.SubmitRequest
		code  codes.Code
		says  string
	}{
		{"malformed JSON", tokenA, submit("counter", "c1", "add", "k", `{"amount":`), codes.InvalidArgument, "JSON"},
		{"missing field", tokenA, submit("counter", "c1", "add", "k", `{}`), codes.InvalidArgument, "amount"},
		{"wrong field type", tokenA, submit("counter", "c1", "add", "k", `{"amount":"5"}`), codes.InvalidArgument, "amount"},
		{"missing entity id", tokenA, submit("counter", "", "add", "k", `{"amount":1}`), codes.InvalidArgument, "entity_id"},
		{"missing idempotency key", tokenA, submit("counter", "c1", "add", "", `{"amount":1}`), codes.InvalidArgument, "idempotency_key"},
		{"unknown actor type", tokenA, submit("robot", "r1", "walk", "k", `{}`), codes.NotFound, "robot"},
		{"unknown verb", tokenA, submit("counter", "c1", "explode", "k", `{}`), codes.InvalidArgument, "add"},
		{"oversized payload", tokenA, submit("counter", "c1", "add", "k", big), codes.InvalidArgument, "limit"},
		{"on behalf without system principal", tokenA, onBehalf, codes.PermissionDenied, "system"},
		{"bad principal type", tokenSys, badType, codes.InvalidArgument, "robot"},
		{"no token", "", submit("counter", "c1", "add", "k", `{"amount":1}`), codes.Unauthenticated, "token"},
		{"unknown token", "not-a-token-at-all-xxxxxxxx", submit("counter", "c1", "add", "k", `{"amount":1}`), codes.Unauthenticated, "token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tn.appliedTotal()
			st := status.Convert(tn.raw(t, tc.token, tc.req))
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.says) {
				t.Fatalf("got %v %q, want %v mentioning %q", st.Code(), st.Message(), tc.code, tc.says)
			}
			if after := tn.appliedTotal(); after != before {
				t.Fatalf("bad input reached the log: applied %d -> %d", before, after)
			}
		})
	}
	got, err := good.Get(ctx(t), &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}})
	if err != nil || got.Version != 1 {
		t.Fatalf("entity after bad inputs: %+v %v", got, err)
	}
	// The shard keeps going.
	if _, err := good.Submit(ctx(t), submit("counter", "c1", "add", "after", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
}

func TestNode_RejectionsAreResultsNotErrors(t *testing.T) {
	tn := startNode(t, t.TempDir(), 2)
	c := tn.client(t, tokenA)
	if _, err := c.Submit(ctx(t), submit("account", "acc", "open", "o", `{}`)); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Submit(ctx(t), submit("account", "acc", "withdraw", "w", `{"amount":5}`))
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Result; r.Status != pb.Status_STATUS_REJECTED || r.Reason != pb.Reason_REASON_BUSINESS || r.Code != "insufficient_funds" {
		t.Fatalf("overdraft: %+v", r)
	}
	stale := submit("account", "acc", "deposit", "d", `{"amount":5}`)
	v := uint64(7)
	stale.ExpectedVersion = &v
	resp, err = c.Submit(ctx(t), stale)
	if err != nil || resp.Result.Reason != pb.Reason_REASON_CONFLICT {
		t.Fatalf("stale version: %+v %v", resp, err)
	}
}

func TestNode_RestartKeepsStateAndDeduplication(t *testing.T) {
	dir := t.TempDir()
	tn := startNode(t, dir, 2)
	c := tn.client(t, tokenA)
	first, err := c.Submit(ctx(t), submit("counter", "c1", "add", "k1", `{"amount":3}`))
	if err != nil {
		t.Fatal(err)
	}
	hash := tn.node.Shards()[tn.node.ShardOf(actor.Address{Tenant: "a", Workspace: "default", ActorType: "counter", EntityID: "c1"})].Meta()
	if err := tn.Close(); err != nil {
		t.Fatal(err)
	}
	tn2 := startNode(t, dir, 2)
	if m := tn2.node.Shards()[first.Shard].Meta(); m.Hash != hash.Hash && m.Index < hash.Index {
		t.Fatalf("state hash after restart: %+v, before %+v", m, hash)
	}
	c2 := tn2.client(t, tokenA)
	again, err := c2.Submit(ctx(t), submit("counter", "c1", "add", "k1", `{"amount":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Result.Duplicate || again.Result.Version != 1 || again.Result.Events[0].Id != first.Result.Events[0].Id {
		t.Fatalf("re-sent after restart: %+v", again.Result)
	}
}

func TestPromise_Determinism_LockLeaseExpiresOnIdleShard(t *testing.T) {
	tn := startNode(t, t.TempDir(), 1)
	c := tn.client(t, tokenA)
	if _, err := c.Submit(ctx(t), submit("lock", "L", "acquire", "a1", `{"owner":"w1","ttl_ms":100}`)); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyNil(t, 10*time.Second, "lease expired through tick entries", func() error {
		h, err := c.History(ctx(t), &pb.HistoryRequest{Address: &pb.Address{ActorType: "lock", EntityId: "L"}})
		if err != nil {
			return err
		}
		if n := len(h.Records); n == 2 && h.Records[1].GetEvent().GetType() == "evt.lock.expired" {
			return nil
		}
		return fmt.Errorf("history %v", h.Records)
	})
	resp, err := c.Submit(ctx(t), submit("lock", "L", "acquire", "a2", `{"owner":"w2","ttl_ms":1000}`))
	if err != nil || resp.Result.Status != pb.Status_STATUS_ACCEPTED {
		t.Fatalf("acquire after expiry: %+v %v", resp, err)
	}
}

// A node's memtable size is spread around the default, so that the replicas
// of a group, which write the same keys together, do not all flush at once.
func TestNode_StateMemtableSizeIsSpread(t *testing.T) {
	tn := startNode(t, t.TempDir(), 1)
	size, def := tn.node.StateMemTableSize(), int64(storage.DefaultMemTableSize)
	hi := int64(float64(def) * (1 + storage.MemTableSpread))
	if size <= def || size > hi {
		t.Fatalf("memtable size %d: want a size above the default %d, at most %d", size, def, hi)
	}
}
