package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/internal/testkit"
)

// serveHTTP runs the gateway's handler in a server built by NewHTTPServer
// with limits, on 127.0.0.1, and returns its address.
func serveHTTP(t *testing.T, h *harness, limits HTTPLimits) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := NewHTTPServer(h.srv.HTTPHandler(), limits)
	go hs.Serve(lis)
	t.Cleanup(func() { hs.Close() })
	return lis.Addr().String()
}

// closedWithin reports whether the server closes c within d (reading and
// discarding whatever it sends).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// Slow clients are cut off: a header sent a byte at a time, a body that
// never completes, a connection left idle (issue 24 item 9).
func TestHTTP_SlowClientsAreClosed(t *testing.T) {
	h := newHarness(t)
	limits := DefaultHTTPLimits()
	limits.ReadHeaderTimeout, limits.ReadTimeout, limits.IdleTimeout = 300*time.Millisecond, 600*time.Millisecond, 600*time.Millisecond
	addr := serveHTTP(t, h, limits)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// A body that never completes, from an authenticated client.
	body := dial()
	fmt.Fprintf(body, "POST /v1/submit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n{\"type\":", tokAlice)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := body.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	})
	if !closedWithin(body, 5*time.Second) {
		t.Error("a connection dripping its body stayed open 5s with a 600ms read timeout")
	}
	close(stop)
	wg.Wait()

	// A connection idle after one request.
	idle := dial()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if !closedWithin(idle, 5*time.Second) {
		t.Error("an idle keep-alive connection stayed open 5s with a 600ms idle timeout")
	}

	// A header that never completes.
	hdr := dial()
	fmt.Fprintf(hdr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	if !closedWithin(hdr, 5*time.Second) {
		t.Error("a connection with an unfinished header stayed open 5s with a 300ms header timeout")
	}
}

// A request without a valid token is refused before its body is read: the
// answer comes while the client has sent none of the body it announced.
func TestHTTP_UnauthenticatedBodyIsNotRead(t *testing.T) {
	h := newHarness(t)
	addr := serveHTTP(t, h, DefaultHTTPLimits())
	for _, tc := range []struct{ name, auth string }{{"no token", ""}, {"unknown token", "Authorization: Bearer not-a-token-0123456789\r\n"}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /v1/submit HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{", tc.auth)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer before the body was sent: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if !closedWithin(c, 5*time.Second) {
				t.Fatal("the server kept the connection open to read the refused body")
			}
		})
	}
}

// JSON that encoding/json would silently rewrite (invalid UTF-8) or resolve
// (a key given twice, last wins) is refused, over HTTP and as a gRPC
// payload (issue 24 item 13).
func TestInput_InvalidUTF8AndDuplicateKeysRefused(t *testing.T) {
	h := newHarness(t)
	addr := `"address":{"actor_type":"counter","entity_id":"c1"},"type":"cmd.counter.add"`
	for _, tc := range []struct{ name, body, want string }{
		{"invalid UTF-8 in payload", `{` + addr + `,"idempotency_key":"k1","payload":{"amount":1,"note":"` + "\xff" + `"}}`, "not valid UTF-8"},
		{"invalid UTF-8 in a field", `{` + addr + `,"idempotency_key":"k` + "\xc3" + `"}`, "not valid UTF-8"},
		{"duplicate payload key", `{` + addr + `,"idempotency_key":"k2","payload":{"amount":1,"amount":100}}`, `duplicate key "amount"`},
		{"duplicate body key", `{` + addr + `,"idempotency_key":"k3","idempotency_key":"k4","payload":{"amount":1}}`, `duplicate key "idempotency_key"`},
		{"duplicate nested key", `{` + addr + `,"idempotency_key":"k5","payload":{"amount":1,"x":[{"a":1,"a":2}]}}`, `duplicate key "a"`},
	} {
		h.be.reset()
		code, resp := httpCall(t, h, "POST", "/v1/submit", tokAlice, tc.body)
		var je JSONError
		_ = json.Unmarshal(resp, &je)
		if code != 400 || !strings.Contains(je.Message, tc.want) || je.Code != "invalid_argument" {
			t.Errorf("%s: %d %s, want 400 invalid_argument with %q", tc.name, code, resp, tc.want)
		}
		if n := len(h.be.commands()); n != 0 {
			t.Errorf("%s: %d commands reached the backend", tc.name, n)
		}
	}
	// Nested objects may reuse their parent's keys; that is not a duplicate.
	if code, resp := httpCall(t, h, "POST", "/v1/submit", tokAlice, `{`+addr+`,"idempotency_key":"k6","payload":{"amount":1,"x":{"amount":2}}}`); code != 200 {
		t.Fatalf("nested reuse of a key: %d %s", code, resp)
	}
	for _, tc := range []struct{ name, payload, want string }{
		{"invalid UTF-8", `{"amount":1,"note":"` + "\xff" + `"}`, "payload is not valid UTF-8"},
		{"duplicate key", `{"amount":1,"amount":100}`, `payload has a duplicate key "amount"`},
	} {
		h.be.reset()
		_, err := h.gw.Submit(withToken(context.Background(), tokAlice), counterReq("c1", "g-"+tc.name, tc.payload))
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("gRPC %s: %v %q, want InvalidArgument with %q", tc.name, st.Code(), st.Message(), tc.want)
		}
		if n := len(h.be.commands()); n != 0 {
			t.Errorf("gRPC %s: %d commands reached the backend", tc.name, n)
		}
	}
}

// Concurrent SubmitBatch calls share one bound on commands in flight, so
// many large batches cannot start a goroutine per command each (issue 24
// item 13).
func TestSubmitBatch_GlobalInFlightCap(t *testing.T) {
	const limit, batches, size = 300, 4, 200
	h := newHarnessWith(t, func(c *Config) { c.MaxBatchInFlight = limit })
	var cur, peak atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // a failed wait must not leave the submits blocked
	h.be.submit = func(_ int, cmd actor.Command) (actor.Result, error) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
		return actor.Result{CommandID: cmd.ID, Status: actor.StatusAccepted, Version: 1}, nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, batches)
	for b := range batches {
		wg.Go(func() {
			req := &pb.SubmitBatchRequest{}
			for i := range size {
				req.Commands = append(req.Commands, counterReq(fmt.Sprint("c", i), fmt.Sprintf("b%d-%d", b, i), `{"amount":1}`))
			}
			resp, err := h.gw.SubmitBatch(withToken(context.Background(), tokAlice), req)
			if err == nil {
				for _, o := range resp.GetOutcomes() {
					if o.GetError() != nil {
						err = status.FromProto(o.GetError()).Err()
						break
					}
				}
			}
			errs <- err
		})
	}
	// Wait until the cap is reached (or passed), leave an overshoot 100 ms
	// to show (the bound of this check), then let everything go.
	testkit.Eventually(t, 10*time.Second, "the cap reached", func() (bool, string) {
		n := cur.Load()
		return n >= limit, fmt.Sprintf("%d in flight", n)
	})
	testkit.Consistently(t, 100*time.Millisecond, "no overshoot", func() (bool, string) {
		p := peak.Load()
		return p <= limit, fmt.Sprintf("%d in flight at once; the cap is %d", p, limit)
	})
	free()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p > limit {
		t.Fatalf("%d commands of concurrent batches in flight at once; the cap is %d", p, limit)
	}
}

var _ = slog.Default
