package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An asynchronous producer learns its command's outcome: send --async --wait
// prints and exits as a synchronous send (0 accepted, 3 rejected), rhizon
// result reads a stored result by entity and idempotency key (gRPC and
// HTTP), scoped by the token, and a key never applied is NotFound.
func TestCLI_SendAsyncWaitAndResult(t *testing.T) {
	t.Parallel()
	p := startDev(t, t.TempDir())
	wait := func(args ...string) (sendResult, int) {
		t.Helper()
		out, code := p.rhizon(t, append(append([]string{"send"}, args...), "--async", "--wait", "--timeout", "30s", "-o", "json")...)
		if out == "" {
			return sendResult{}, code
		}
		return decode[sendResult](t, out), code
	}
	ok, code := wait("counter/r1", "add", `{"amount":2}`, "--idempotency-key", "a1")
	if code != 0 || !ok.Accepted || ok.Version != 1 || len(ok.Events) != 1 || ok.Duplicate {
		t.Fatalf("send --async --wait: exit %d %+v", code, ok)
	}
	if r, code := wait("counter/r1", "add", `{"amount":2}`, "--idempotency-key", "a2", "--expected-version", "0"); code != exitRejected || r.Reason != "conflict" || r.Code != "version_conflict" {
		t.Fatalf("conflict: exit %d %+v", code, r)
	}
	if r, code := wait("account/x1", "withdraw", `{"amount":10}`, "--idempotency-key", "a3"); code != exitRejected || r.Reason != "business" || r.Code != "not_open" {
		t.Fatalf("business rejection: exit %d %+v", code, r)
	}
	// The same key again under a new command id: the first one's result.
	if r, code := wait("counter/r1", "add", `{"amount":2}`, "--idempotency-key", "a1"); code != 0 || !r.Duplicate || r.Version != 1 || r.Events[0].ID != ok.Events[0].ID {
		t.Fatalf("same key again: exit %d %+v", code, r)
	}
	// Text output is send's.
	out, code := p.rhizon(t, "send", "counter/r1", "add", `{"amount":1}`, "--async", "--wait")
	if code != 0 || !strings.HasPrefix(out, "accepted") {
		t.Fatalf("send --async --wait, text: exit %d %q", code, out)
	}

	out, code = p.rhizon(t, "result", "counter/r1", "--key", "a1", "-o", "json")
	if r := decode[sendResult](t, out); code != 0 || !r.Accepted || r.Version != 1 || r.Events[0].ID != ok.Events[0].ID || r.Duplicate {
		t.Fatalf("result a1: exit %d %+v", code, r)
	}
	out, code = p.rhizon(t, "result", "--address", "counter/r1", "--key", "a2", "-o", "json")
	if r := decode[sendResult](t, out); code != exitRejected || r.Code != "version_conflict" {
		t.Fatalf("result a2: exit %d %+v", code, r)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"result", "counter/r1", "--key", "never-sent"}, exitError},                     // NotFound
		{[]string{"result", "counter/r2", "--key", "a1"}, exitError},                             // results are per entity
		{[]string{"result", "counter/r1", "--key", "a1", "--tenant", "someone-else"}, exitError}, // PermissionDenied
		{[]string{"result", "counter/r1"}, exitUsage},
		{[]string{"result", "--key", "a1"}, exitUsage},
		{[]string{"send", "counter/r1", "add", "--wait"}, exitUsage},
	} {
		if _, code := p.rhizon(t, tc.args...); code != tc.code {
			t.Errorf("rhizon %v: exit %d, want %d", tc.args, code, tc.code)
		}
	}

	// The rejections are on the events stream too, after the event.
	out, code = p.rhizon(t, "watch", "--entity", "counter/r1", "--rejections", "--from-beginning", "--count", "2", "--timeout", "20s", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.Contains(lines[0], `"evt.counter.added"`) ||
		!strings.Contains(lines[1], `"rejection"`) || !strings.Contains(lines[1], `"version_conflict"`) || !strings.Contains(lines[1], `"a2"`) {
		t.Fatalf("watch --rejections: exit %d %q", code, out)
	}

	// HTTP: POST /v1/result.
	post := func(body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(p.http, "/")+"/v1/result", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+p.token)
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	st, v := post(`{"address":{"actor_type":"counter","entity_id":"r1"},"idempotency_key":"a1"}`)
	res, _ := v["result"].(map[string]any)
	if st != http.StatusOK || res["status"] != "accepted" || res["version"] != float64(1) {
		t.Fatalf("POST /v1/result: %d %v", st, v)
	}
	if st, v := post(`{"address":{"actor_type":"counter","entity_id":"r1"},"idempotency_key":"nope"}`); st != http.StatusNotFound {
		t.Fatalf("POST /v1/result of an unknown key: %d %v", st, v)
	}
	if st, v := post(`{"address":{"actor_type":"counter","entity_id":"r1"}}`); st != http.StatusBadRequest {
		t.Fatalf("POST /v1/result without a key: %d %v", st, v)
	}
}
