package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// GET /v1/watch?include_rejections streams an entity's recorded rejections
// with its events, in order, as {"rejection": ...} lines; without it only
// the events come.
func TestWatch_OverHTTPIncludesRejections(t *testing.T) {
	e := startAsyncEnv(t)
	ctx := callCtx(t, tokAlice)
	if _, err := e.gw.Submit(ctx, counterReq("h2", "k1", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	stale := counterReq("h2", "k2", `{"amount":1}`)
	zero := uint64(0)
	stale.ExpectedVersion = &zero
	if _, err := e.gw.Submit(ctx, stale); err != nil {
		t.Fatal(err)
	}
	if _, err := e.gw.Submit(ctx, counterReq("h2", "k3", `{"amount":1}`)); err != nil {
		t.Fatal(err)
	}
	lines := func(query string, n int) []JSONWatchEvent {
		t.Helper()
		rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		r, err := http.NewRequestWithContext(rctx, http.MethodGet, e.http.URL+"/v1/watch?actor_type=counter&entity_id=h2&from_beginning"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Bearer "+tokAlice)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/watch%s: %d", query, resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		var out []JSONWatchEvent
		for len(out) < n && sc.Scan() {
			var l JSONWatchEvent
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			out = append(out, l)
		}
		return out
	}
	got := lines("&include_rejections", 3)
	if len(got) != 3 || got[0].Event == nil || got[0].Event.Version != 1 ||
		got[1].Rejection == nil || got[1].Rejection.Code != "version_conflict" || got[1].Rejection.IdempotencyKey != "k2" || got[1].Rejection.Type != "evt.counter.rejected" ||
		got[2].Event == nil || got[2].Event.Version != 2 || got[2].Sequence <= got[1].Sequence {
		t.Fatalf("watch with rejections: %+v", got)
	}
	if got := lines("", 2); len(got) != 2 || got[0].Event == nil || got[1].Event == nil || got[1].Event.Version != 2 {
		t.Fatalf("watch without rejections: %+v", got)
	}
	code, b := httpDo(t, e.http.URL, http.MethodGet, "/v1/watch?include_rejections=maybe", tokAlice, "")
	if code != http.StatusBadRequest || !strings.Contains(string(b), "include_rejections") {
		t.Fatalf("include_rejections=maybe: %d %s", code, b)
	}
}
