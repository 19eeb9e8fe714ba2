package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// quotaClock is a settable clock: the limiters then refill only when a test
// says so, and no test depends on how fast it runs.
type quotaClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *quotaClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *quotaClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countingBackend is a fakeBackend that also reports a node count.
type countingBackend struct {
	*fakeBackend
	nodes int
}

func (c *countingBackend) LiveNodes() int { return c.nodes }

// newQuotaHarness is newHarness with quotas parsed from yamlText, on a clock
// the test moves. nodes > 0 makes the backend report that many live nodes.
func newQuotaHarness(t *testing.T, yamlText string, nodes int) (*harness, *Quotas, *quotaClock) {
	t.Helper()
	q, err := ParseQuotas("test", []byte(yamlText))
	if err != nil {
		t.Fatal(err)
	}
	clk := &quotaClock{t: time.Unix(1_700_000_000, 0)}
	q.now = clk.now
	h := newHarnessWith(t, func(c *Config) {
		c.Quotas = q
		if nodes > 0 {
			c.Backend = &countingBackend{fakeBackend: c.Backend.(*fakeBackend), nodes: nodes}
		}
	})
	return h, q, clk
}

// submitAs submits one counter command with a fresh key and returns the
// error and the call's header and trailer.
func submitAs(t *testing.T, h *harness, token, tenant, key string) (metadata.MD, error) {
	t.Helper()
	req := counterReq("c1", key, `{"amount":1}`)
	req.Address.Tenant = tenant
	if tenant == "beta" {
		req.Address.Workspace = "ops"
	}
	var hdr, trl metadata.MD
	_, err := h.gw.Submit(withToken(context.Background(), token), req, grpc.Header(&hdr), grpc.Trailer(&trl))
	return metadata.Join(hdr, trl), err
}

func wantRateLimited(t *testing.T, err error, md metadata.MD, wantMs string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || infoReason(st) != ReasonRateLimited {
		t.Fatalf("got %v (reason %q); want ResourceExhausted %s", err, infoReason(st), ReasonRateLimited)
	}
	if md != nil {
		if got := md.Get(RetryAfterMsTrailer); len(got) == 0 || got[0] != wantMs {
			t.Errorf("%s = %v; want %s", RetryAfterMsTrailer, got, wantMs)
		}
		if got := md.Get(RetryAfterTrailer); len(got) == 0 || got[0] == "0" {
			t.Errorf("%s = %v; want whole seconds > 0", RetryAfterTrailer, got)
		}
	}
	if d, ok := retryAfter(st); !ok || d <= 0 {
		t.Errorf("no RetryInfo in %v", st.Details())
	}
}

func TestQuotaRateLimitsTenantWithRetryAfter(t *testing.T) {
	h, _, clk := newQuotaHarness(t, "default: {rate: 2, burst: 3}\n", 0)
	for i := range 3 {
		if _, err := submitAs(t, h, tokAlice, "acme", "k"+string(rune('a'+i))); err != nil {
			t.Fatalf("submit %d within the burst: %v", i, err)
		}
	}
	md, err := submitAs(t, h, tokAlice, "acme", "k-over")
	// 2 per second: the next token is 500 ms away.
	wantRateLimited(t, err, md, "500")
	if got := len(h.be.commands()); got != 3 {
		t.Fatalf("%d commands reached the backend; the refused one must not", got)
	}
	// Another tenant has its own bucket.
	if _, err := submitAs(t, h, tokOps, "beta", "b1"); err != nil {
		t.Fatalf("tenant beta throttled by acme's use: %v", err)
	}
	// A refused request costs nothing: after the wait one more fits.
	clk.advance(500 * time.Millisecond)
	if _, err := submitAs(t, h, tokAlice, "acme", "k-later"); err != nil {
		t.Fatalf("after the retry-after: %v", err)
	}
	md, err = submitAs(t, h, tokAlice, "acme", "k-over2")
	wantRateLimited(t, err, md, "500")
}

func TestQuotaRateLimitsPrincipal(t *testing.T) {
	// acme unlimited, but the principal alice gets 1 per second, burst 2.
	h, _, _ := newQuotaHarness(t, "principals: {alice: {rate: 1, burst: 2}}\n", 0)
	for i := range 2 {
		if _, err := submitAs(t, h, tokAlice, "acme", "a"+string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	md, err := submitAs(t, h, tokAlice, "acme", "a-over")
	wantRateLimited(t, err, md, "1000")
	// ops writes to the same tenant under its own principal.
	if _, err := submitAs(t, h, tokOps, "acme", "o1"); err != nil {
		t.Fatalf("principal ops throttled by alice's use: %v", err)
	}
}

func TestQuotaOutOfScopeDoesNotSpendVictimQuota(t *testing.T) {
	h, _, _ := newQuotaHarness(t, "tenants: {beta: {rate: 1, burst: 1}}\n", 0)
	// alice may not act in beta: denied, and beta's single token stays.
	for range 3 {
		_, err := submitAs(t, h, tokAlice, "beta", "x")
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("out of scope: %v", err)
		}
	}
	if _, err := submitAs(t, h, tokOps, "beta", "b1"); err != nil {
		t.Fatalf("beta's quota was spent by another tenant's denied requests: %v", err)
	}
}

func TestQuotaSubmitBatchCountsEachCommand(t *testing.T) {
	h, _, _ := newQuotaHarness(t, "default: {rate: 1, burst: 3}\n", 0)
	req := &pb.SubmitBatchRequest{}
	for i := range 5 {
		req.Commands = append(req.Commands, counterReq("c"+string(rune('0'+i)), "bk"+string(rune('0'+i)), `{"amount":1}`))
	}
	resp, err := h.gw.SubmitBatch(withToken(context.Background(), tokAlice), req)
	if err != nil {
		t.Fatal(err)
	}
	ok, limited := 0, 0
	for _, o := range resp.GetOutcomes() {
		if o.GetError() == nil {
			ok++
			continue
		}
		st := status.FromProto(o.GetError())
		wantRateLimited(t, st.Err(), nil, "")
		limited++
	}
	if ok != 3 || limited != 2 {
		t.Fatalf("%d accepted, %d rate-limited; want 3 and 2 (each command counts)", ok, limited)
	}
}

func TestQuotaLimitsReads(t *testing.T) {
	h, _, _ := newQuotaHarness(t, "default: {rate: 1, burst: 1}\n", 0)
	ctx := withToken(context.Background(), tokAlice)
	get := &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}}
	if _, err := h.gw.Get(ctx, get); err != nil {
		t.Fatal(err)
	}
	var trl metadata.MD
	_, err := h.gw.Get(ctx, get, grpc.Trailer(&trl))
	wantRateLimited(t, err, trl, "1000")
	_, err = h.gw.History(ctx, &pb.HistoryRequest{Address: get.Address})
	wantRateLimited(t, err, nil, "")
}

func TestQuotaHTTP429RetryAfter(t *testing.T) {
	h, _, _ := newQuotaHarness(t, "default: {rate: 0.5, burst: 1}\n", 0)
	body := submitJSON(t, counterReq("c1", "h1", `{"amount":1}`))
	if code, b := httpCall(t, h, "POST", "/v1/submit", tokAlice, body); code != http.StatusOK {
		t.Fatalf("first: %d %s", code, b)
	}
	code, hdr, b := httpCallHeaders(t, h, "POST", "/v1/submit", tokAlice, submitJSON(t, counterReq("c1", "h2", `{"amount":1}`)), nil)
	if code != http.StatusTooManyRequests {
		t.Fatalf("second: %d %s; want 429", code, b)
	}
	if got := hdr.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q; want 2 (0.5 per second)", got)
	}
	if got := hdr.Get(RetryAfterMsTrailer); got != "2000" {
		t.Errorf("%s %q; want 2000", RetryAfterMsTrailer, got)
	}
	var e JSONError
	if err := json.Unmarshal(b, &e); err != nil || e.Code != "resource_exhausted" || e.Outcome != "not_applied" {
		t.Errorf("body %s", b)
	}
}

func TestQuotaStorageExceeded(t *testing.T) {
	h, q, _ := newQuotaHarness(t, "default: {storage_bytes: 1000}\ntenants: {beta: {storage_bytes: -1}}\n", 0)
	q.SetUsage(map[string]int64{"acme": 1500, "beta": 1 << 40})
	_, err := submitAs(t, h, tokAlice, "acme", "s1")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || infoReason(st) != ReasonQuotaExceeded || !strings.Contains(st.Message(), "quota_exceeded") {
		t.Fatalf("over quota: %v (reason %q)", err, infoReason(st))
	}
	if len(h.be.commands()) != 0 {
		t.Fatal("a write over quota reached the backend")
	}
	// Reads still work; an unlimited tenant still writes.
	if _, err := h.gw.Get(withToken(context.Background(), tokAlice), &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}}); err != nil {
		t.Fatalf("read over quota: %v", err)
	}
	if _, err := submitAs(t, h, tokOps, "beta", "s2"); err != nil {
		t.Fatalf("unlimited tenant: %v", err)
	}
	// Under the quota again (the operator raised it, say): writes pass.
	q.SetUsage(map[string]int64{"acme": 999})
	if _, err := submitAs(t, h, tokAlice, "acme", "s3"); err != nil {
		t.Fatalf("under quota: %v", err)
	}
}

func TestQuotaShareAcrossNodes(t *testing.T) {
	// 4 per second, burst 4, over 2 nodes: this node admits 2 at once.
	h, _, _ := newQuotaHarness(t, "default: {rate: 4, burst: 4}\n", 2)
	for i := range 2 {
		if _, err := submitAs(t, h, tokAlice, "acme", "n"+string(rune('0'+i))); err != nil {
			t.Fatal(err)
		}
	}
	md, err := submitAs(t, h, tokAlice, "acme", "n-over")
	wantRateLimited(t, err, md, "500")
}

func TestParseQuotas(t *testing.T) {
	q, err := ParseQuotas("t", []byte(`{"default":{"rate":10,"storage_bytes":100},"tenants":{"big":{"rate":-1},"small":{"burst":2}},"storage_refresh":"250ms"}`))
	if err != nil {
		t.Fatal(err)
	}
	if l := q.tenantLimits("other"); l.rate != 10 || l.burst != 10 || l.storage != 100 {
		t.Errorf("default %+v: a rate without burst gets a second's worth", l)
	}
	if l := q.tenantLimits("big"); l.rate != 0 || l.storage != 100 {
		t.Errorf("big %+v: -1 is unlimited, absent inherits", l)
	}
	if l := q.tenantLimits("small"); l.rate != 10 || l.burst != 2 {
		t.Errorf("small %+v", l)
	}
	if q.Refresh() != 250*time.Millisecond {
		t.Errorf("refresh %v", q.Refresh())
	}
	if q, err := ParseQuotas("empty", nil); err != nil || q.tenantLimits("x") != (limits{}) {
		t.Errorf("empty file: %v", err)
	}
	for _, bad := range []string{
		"default: {rate: -2}\n",
		"tenants: {\"a b\": {rate: 1}}\n",
		"principals: {p: {storage_bytes: 5}}\n",
		"storage_refresh: soon\n",
		"defaults: {rate: 1}\n", // unknown key
		`{"default":{"rate":1},"extra":1}`,
	} {
		if _, err := ParseQuotas("bad", []byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
