package gateway

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/testkit"
)

// A system token scoped to one tenant may impersonate within it but not
// drain nodes: that is the admin role's (issue 24 item 7).
func TestRoles_DrainNeedsAdmin(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ tok, role string }{{tokSystem, "system"}, {tokAlice, "tenant"}} {
		_, err := h.gw.Drain(withToken(context.Background(), tc.tok), &pb.DrainRequest{NodeId: "n2"})
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "role admin") || !strings.Contains(st.Message(), "role "+tc.role) {
			t.Fatalf("drain with a %s token: %v %q, want PermissionDenied naming role admin and role %s", tc.role, st.Code(), st.Message(), tc.role)
		}
	}
	if _, err := h.gw.Drain(withToken(context.Background(), tokAdmin), &pb.DrainRequest{NodeId: "n2"}); err != nil {
		t.Fatalf("drain with an admin token: %v", err)
	}
	// An admin may not impersonate: that is the system role's.
	req := counterReq("c1", "k", `{"amount":1}`)
	req.OnBehalfOf = &pb.Principal{Id: "bob", Type: "user"}
	if _, err := h.gw.Submit(withToken(context.Background(), tokAdmin), req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("on_behalf_of with an admin token: %v", err)
	}
}

func TestRoles_TokenFileRoles(t *testing.T) {
	a, err := NewAuth("test", []TokenEntry{
		{Token: "old-system-token-0123", Principal: TokenPrincipal{ID: "relay", Type: "system"}, Scopes: []TokenScope{{Tenant: "acme", Workspace: "*"}}},
		{Token: "user-token-0123456789", Principal: TokenPrincipal{ID: "u", Type: "user"}, Scopes: []TokenScope{{Tenant: "acme", Workspace: "*"}}},
		{Token: "admin-token-012345678", Role: "admin", Principal: TokenPrincipal{ID: "ops", Type: "user"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]Role{"old-system-token-0123": RoleSystem, "user-token-0123456789": RoleTenant, "admin-token-012345678": RoleAdmin} {
		id, err := a.Authenticate(tok)
		if err != nil || id.Role != want {
			t.Fatalf("%s: role %q %v, want %q", tok, id.Role, err, want)
		}
	}
	for _, tc := range []struct {
		name string
		e    TokenEntry
		want string
	}{
		{"unknown role", TokenEntry{Token: "0123456789abcdef", Role: "root", Principal: TokenPrincipal{ID: "x", Type: "user"}, Scopes: []TokenScope{{Tenant: "a", Workspace: "*"}}}, `role "root" is not one of tenant, system, admin`},
		{"system role, user principal", TokenEntry{Token: "0123456789abcdef", Role: "system", Principal: TokenPrincipal{ID: "x", Type: "user"}, Scopes: []TokenScope{{Tenant: "a", Workspace: "*"}}}, `role system needs principal type system`},
		{"tenant role, system principal", TokenEntry{Token: "0123456789abcdef", Role: "tenant", Principal: TokenPrincipal{ID: "x", Type: "system"}, Scopes: []TokenScope{{Tenant: "a", Workspace: "*"}}}, `role tenant is for principal types user, service, agent`},
		{"tenant without scopes", TokenEntry{Token: "0123456789abcdef", Principal: TokenPrincipal{ID: "x", Type: "user"}}, "no scopes"},
		{"bad not_after", TokenEntry{Token: "0123456789abcdef", NotAfter: "tomorrow", Principal: TokenPrincipal{ID: "x", Type: "user"}, Scopes: []TokenScope{{Tenant: "a", Workspace: "*"}}}, `not_after "tomorrow" is not an RFC 3339 time`},
	} {
		_, err := NewAuth("test", []TokenEntry{tc.e})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	a, err := NewAuth("test", []TokenEntry{
		{Token: "expiring-token-012345", NotAfter: "2030-01-02T03:04:05Z", Principal: TokenPrincipal{ID: "u", Type: "user"}, Scopes: []TokenScope{{Tenant: "acme", Workspace: "*"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a.now = func() time.Time { return now }
	if _, err := a.Authenticate("expiring-token-012345"); err != nil {
		t.Fatalf("at not_after: %v", err)
	}
	now = now.Add(time.Second)
	_, err = a.Authenticate("expiring-token-012345")
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || st.Message() != "token expired at 2030-01-02T03:04:05Z" {
		t.Fatalf("after not_after: %v %q", st.Code(), st.Message())
	}
}

func writeTokens(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func tokenFileOf(tok, principal string) string {
	return `{"tokens":[{"token":"` + tok + `","principal":{"id":"` + principal + `","type":"user"},"scopes":[{"tenant":"acme","workspace":"*"}]}]}`
}

// Reload swaps the tokens in place; a broken file keeps the old ones.
func TestTokenReload(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens.json")
	writeTokens(t, p, tokenFileOf("first-token-0123456789", "one"))
	a, err := LoadTokenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	writeTokens(t, p, tokenFileOf("second-token-0123456789", "two"))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate("first-token-0123456789"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a removed token still works: %v", err)
	}
	if id, err := a.Authenticate("second-token-0123456789"); err != nil || id.Principal.ID != "two" {
		t.Fatalf("the new token: %+v %v", id, err)
	}
	writeTokens(t, p, `{"tokens":[{"token":"short"}]}`)
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), "token entry 1") {
		t.Fatalf("a broken file reloaded: %v", err)
	}
	if _, err := a.Authenticate("second-token-0123456789"); err != nil {
		t.Fatalf("a broken file dropped the old tokens: %v", err)
	}
}

// WatchFile notices a changed file by itself, and logs a broken one.
func TestTokenFileWatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens.json")
	writeTokens(t, p, tokenFileOf("first-token-0123456789", "one"))
	a, err := LoadTokenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var logBuf syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.WatchFile(ctx, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logBuf, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })

	writeTokens(t, p, `{"tokens":[]}`)
	testkit.Eventually(t, 10*time.Second, "a broken token file logged", func() (bool, string) {
		return strings.Contains(logBuf.String(), "keeping the previous tokens"), logBuf.String()
	})
	if _, err := a.Authenticate("first-token-0123456789"); err != nil {
		t.Fatalf("a broken file dropped the old tokens: %v", err)
	}
	writeTokens(t, p, tokenFileOf("second-token-0123456789", "two"))
	testkit.EventuallyNil(t, 10*time.Second, "the new token loaded", func() error {
		_, err := a.Authenticate("second-token-0123456789")
		return err
	})
	if _, err := a.Authenticate("first-token-0123456789"); err == nil {
		t.Fatal("a removed token still works")
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func protoEqual(a, b proto.Message) bool { return proto.Equal(a, b) }

var _ io.Writer = (*syncBuffer)(nil)

// A tenant's Status shows routing (leaders, terms, nodes' gateway
// addresses) but not other tenants' activity: no applied or commit indexes,
// no state hashes (issue 24 item 12). An admin sees everything.
func TestStatus_TenantViewHidesActivity(t *testing.T) {
	h := newHarness(t)
	h.be.status = &pb.StatusResponse{
		ShardCount: 2, ClusterId: "c1", MapVersion: 7, ControlLeader: "n1", Rebalancing: []string{"shard 1: learner n3"},
		Shards: []*pb.ShardStatus{
			{Shard: 0, Role: "Leader", Leader: "n1", Term: 3, AppliedIndex: 40, CommitIndex: 41, LastLogIndex: 42, StateHash: "abc", NodeId: "n1", Voters: []string{"n1"}},
			{Shard: 1, Role: "Follower", Leader: "n2", Term: 2, AppliedIndex: 50, CommitIndex: 51, LastLogIndex: 52, StateHash: "def", NodeId: "n1"},
		},
		Nodes: []*pb.NodeStatus{{NodeId: "n1", State: "alive", GrpcAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2", Zone: "z", Leading: 1, Replicas: 2, ControlVoter: true}},
	}
	for _, tok := range []string{tokAlice, tokSystem} {
		st, err := h.gw.Status(withToken(context.Background(), tok), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		want := &pb.StatusResponse{
			NodeId: "n1", Version: "test", ShardCount: 2, ActorTypes: []string{"counter", "lock"},
			Shards: []*pb.ShardStatus{
				{Shard: 0, Role: "Leader", Leader: "n1", Term: 3, NodeId: "n1"},
				{Shard: 1, Role: "Follower", Leader: "n2", Term: 2, NodeId: "n1"},
			},
			Nodes:  []*pb.NodeStatus{{NodeId: "n1", State: "alive", GrpcAddr: "127.0.0.1:1"}},
			Health: HealthReady, ShardHealth: []*pb.ShardHealth{{Shard: 0, State: HealthReady}, {Shard: 1, State: HealthReady}},
		}
		if !protoEqual(st, want) {
			t.Fatalf("tenant view:\n%v\nwant\n%v", st, want)
		}
	}
	st, err := h.gw.Status(withToken(context.Background(), tokAdmin), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Shards[1].AppliedIndex != 50 || st.Shards[0].StateHash != "abc" || st.Nodes[0].RaftAddr == "" || st.MapVersion != 7 {
		t.Fatalf("admin view lost details: %v", st)
	}
	// HTTP shows the same tenant view.
	code, body := httpCall(t, h, "GET", "/v1/status", tokAlice, "")
	if code != 200 || strings.Contains(string(body), `"applied_index":50`) || strings.Contains(string(body), "def") {
		t.Fatalf("HTTP tenant status %d %s", code, body)
	}
}
