package gateway

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/outcome"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
)

// hintBackend is a fakeBackend that leads shards 0 and 1 itself and knows n2
// at 10.0.0.2:7400 leads 2 and 3.
type hintBackend struct{ *fakeBackend }

func (hintBackend) LeaderHint(shard uint32) (string, string, bool) {
	if shard < 2 {
		return "n1", "10.0.0.1:7400", false
	}
	return "n2", "10.0.0.2:7400", true
}

var _ RouteHinter = hintBackend{}

func TestRouteTrailers(t *testing.T) {
	h := newHarnessWith(t, func(c *Config) { c.Backend = hintBackend{c.Backend.(*fakeBackend)} })
	be := h.be
	ctx := withToken(context.Background(), tokAlice)
	trailer := func(md metadata.MD, k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}

	// The fake's shard is len(entity) % 4: "c1" is shard 2, led by n2.
	var tr metadata.MD
	if _, err := h.gw.Submit(ctx, counterReq("c1", "k1", `{"amount":1}`), grpc.Trailer(&tr)); err != nil {
		t.Fatal(err)
	}
	if trailer(tr, LeaderTrailer) != "n2" || trailer(tr, LeaderAddrTrailer) != "10.0.0.2:7400" {
		t.Errorf("forwarded submit: trailers %v, want the leader n2 and its address", tr)
	}
	if got := trailer(tr, ScopeTrailer); got != "acme/"+DefaultWorkspace {
		t.Errorf("scope trailer %q, want the token's default acme/%s", got, DefaultWorkspace)
	}

	// A full address on a shard this node leads: nothing to say.
	req := counterReq("c1234", "k2", `{"amount":1}`) // shard 1, led here
	req.Address.Tenant, req.Address.Workspace = "acme", "w"
	tr = nil
	if _, err := h.gw.Submit(ctx, req, grpc.Trailer(&tr)); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{LeaderTrailer, LeaderAddrTrailer, ScopeTrailer} {
		if v := tr.Get(k); len(v) > 0 {
			t.Errorf("request served where it belongs: trailer %s=%q", k, v)
		}
	}

	// Errors carry the hint too: a client retries them.
	be.mu.Lock()
	be.submit = func(int, actor.Command) (actor.Result, error) { return actor.Result{}, outcome.ErrNotLeader }
	be.mu.Unlock()
	tr = nil
	if _, err := h.gw.Submit(ctx, counterReq("c1", "k3", `{"amount":1}`), grpc.Trailer(&tr)); err == nil {
		t.Fatal("submit succeeded")
	}
	if trailer(tr, LeaderAddrTrailer) != "10.0.0.2:7400" {
		t.Errorf("failed submit: trailers %v, want the leader hint", tr)
	}

	// A linearizable read names the leader; a stale one, which any replica
	// serves, does not (but still says the scope it filled in).
	tr = nil
	if _, err := h.gw.Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}}, grpc.Trailer(&tr)); err != nil {
		t.Fatal(err)
	}
	if trailer(tr, LeaderTrailer) != "n2" {
		t.Errorf("linearizable get: trailers %v", tr)
	}
	tr = nil
	if _, err := h.gw.Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, Consistency: pb.Consistency_CONSISTENCY_STALE}, grpc.Trailer(&tr)); err != nil {
		t.Fatal(err)
	}
	if len(tr.Get(LeaderTrailer)) > 0 || trailer(tr, ScopeTrailer) == "" {
		t.Errorf("stale get: trailers %v", tr)
	}
	tr = nil
	if _, err := h.gw.History(ctx, &pb.HistoryRequest{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}}, grpc.Trailer(&tr)); err != nil {
		t.Fatal(err)
	}
	if trailer(tr, LeaderTrailer) != "n2" {
		t.Errorf("history: trailers %v", tr)
	}

	// The HTTP gateway has no trailers and sets no such header.
	code, hdr, _ := httpCallHeaders(t, h, http.MethodPost, "/v1/submit", tokAlice, submitJSON(t, counterReq("c1", "k4", `{"amount":1}`)), nil)
	if hdr.Get(LeaderTrailer) != "" {
		t.Errorf("HTTP %d: header %s=%q", code, LeaderTrailer, hdr.Get(LeaderTrailer))
	}
}
