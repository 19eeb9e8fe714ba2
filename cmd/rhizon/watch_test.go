package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/internal/ingresstest"
)

const asyncToken = "cli-async-token-0123456789"

// startAsyncGateway runs, in this process, a real node, a real embedded NATS
// server, the ingress manager and a gateway over them on 127.0.0.1:0, and
// returns the gateway's address. (The `rhizon dev` process tests cannot
// cover these commands until the node wires the manager into its gateway.)
func startAsyncGateway(t *testing.T) string {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ie := ingresstest.Start(t, ingresstest.Options{Logger: quiet})
	n, mgr := ie.Node, ie.Manager
	auth, err := gateway.NewAuth("test", []gateway.TokenEntry{{
		Token: asyncToken, Principal: gateway.TokenPrincipal{ID: "dev", Type: "user"},
		Scopes: []gateway.TokenScope{{Tenant: "dev", Workspace: "*"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return serveGateway(t, gateway.Config{Backend: n, Auth: auth, Async: mgr, Logger: quiet})
}

// serveGateway serves a gateway of cfg over gRPC on 127.0.0.1:0 until the
// test ends and returns its address.
func serveGateway(t *testing.T, cfg gateway.Config) string {
	t.Helper()
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gateway.ServerOptions()...)
	gw.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() {
		gw.Shutdown()
		gs.Stop()
	})
	return lis.Addr().String()
}

// runCLI runs one client command in this process against addr and returns
// its stdout and the exit status main would give it.
func runCLI(t *testing.T, cmd *cobra.Command, addr string, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.SetArgs(append(args, "--addr", addr, "--token", asyncToken))
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	code := 0
	if err != nil {
		code = exitUsage
		var ee *exitErr
		if errors.As(err, &ee) {
			code = ee.code
		}
		t.Logf("rhizon %s %v: exit %d: %v", cmd.Name(), args, code, err)
	}
	return out.String(), code
}

type enqueuedJSON struct {
	Stream         string `json:"stream"`
	Sequence       uint64 `json:"sequence"`
	Duplicate      bool   `json:"duplicate"`
	Shard          uint32 `json:"shard"`
	CommandID      string `json:"command_id"`
	IdempotencyKey string `json:"idempotency_key"`
}

type watchLine struct {
	Sequence uint64 `json:"sequence"`
	Event    struct {
		Type    string `json:"type"`
		Version uint64 `json:"version"`
		Address struct {
			ActorType string `json:"actor_type"`
			EntityID  string `json:"entity_id"`
		} `json:"address"`
		Payload struct {
			Amount int64 `json:"amount"`
			Value  int64 `json:"value"`
		} `json:"payload"`
	} `json:"event"`
}

func TestCLI_SendAsyncAndWatch(t *testing.T) {
	t.Parallel()
	addr := startAsyncGateway(t)

	out, code := runCLI(t, sendCmd(), addr, "counter/c1", "add", `{"amount":5}`, "--async", "--idempotency-key", "k1", "-o", "json")
	first := decode[enqueuedJSON](t, out)
	if code != 0 || first.Stream != stream.IngressStream || first.Sequence == 0 || first.Duplicate || first.IdempotencyKey != "k1" || first.CommandID == "" {
		t.Fatalf("send --async: exit %d %+v", code, first)
	}
	out, code = runCLI(t, sendCmd(), addr, "counter/c1", "add", `{"amount":5}`, "--async", "--idempotency-key", "k1", "-o", "json")
	if again := decode[enqueuedJSON](t, out); code != 0 || !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("send --async again with k1: exit %d %+v, want a duplicate of sequence %d", code, again, first.Sequence)
	}
	out, code = runCLI(t, sendCmd(), addr, "counter/c1", "add", `{"amount":5}`, "--async", "--idempotency-key", "k1")
	if code != 0 || !strings.HasPrefix(out, "already enqueued (duplicate") || strings.Contains(out, "command id") {
		t.Fatalf("send --async again with k1, text: exit %d %q", code, out)
	}
	out, code = runCLI(t, sendCmd(), addr, "counter/c1", "add", `{"amount":2}`, "--async")
	if code != 0 || !strings.HasPrefix(out, "enqueued: stream RHIZON_COMMANDS sequence ") || !strings.Contains(out, "idempotency key ") {
		t.Fatalf("send --async, text: exit %d %q", code, out)
	}

	// Both commands applied once each: two events, the counter at 7.
	out, code = runCLI(t, watchCmd(), addr, "--entity", "counter/c1", "--from-beginning", "--count", "2", "--timeout", "20s", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("watch --count 2: exit %d, output %q", code, out)
	}
	var evs [2]watchLine
	for i, l := range lines {
		evs[i] = decode[watchLine](t, l)
	}
	if evs[0].Event.Version != 1 || evs[0].Event.Payload.Value != 5 || evs[1].Event.Version != 2 || evs[1].Event.Payload.Value != 7 ||
		evs[1].Event.Type != "evt.counter.added" || evs[1].Event.Address.EntityID != "c1" || evs[1].Sequence <= evs[0].Sequence {
		t.Fatalf("events %+v", evs)
	}

	// Live, resumed after the last event: only what comes next, in text.
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	go func() {
		out, code := runCLI(t, watchCmd(), addr, "--type", "counter", "--after", strconv.FormatUint(evs[1].Sequence, 10), "--count", "1", "--timeout", "20s")
		done <- result{out, code}
	}()
	if _, code := runCLI(t, sendCmd(), addr, "counter/c2", "add", `{"amount":3}`); code != 0 {
		t.Fatalf("send counter/c2: exit %d", code)
	}
	r := <-done
	if f := strings.Fields(r.out); r.code != 0 || len(f) != 5 || f[1] != "counter/c2" || f[2] != "v1" || f[3] != "evt.counter.added" {
		t.Fatalf("watch --after: exit %d %q", r.code, r.out)
	}

	// Usage errors, refusals and the deadline.
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--entity", "c1"}, exitUsage},
		{[]string{"--entity", "kv/c1", "--actor-type", "counter"}, exitUsage},
		{[]string{"--event-type", "added"}, exitUsage},
		{[]string{"--after", "3", "--from-beginning"}, exitUsage},
		{[]string{"--count", "-1"}, exitUsage},
		{[]string{"-o", "yaml"}, exitUsage},
		{[]string{"--tenant", "other", "--timeout", "10s"}, exitError},                                   // PermissionDenied
		{[]string{"--type", "counter", "--event-type", "evt.kv.created", "--timeout", "10s"}, exitError}, // InvalidArgument
		{[]string{"--timeout", "300ms"}, 0},                                                              // an open-ended watch ends at --timeout
		{[]string{"--timeout", "300ms", "--count", "5"}, exitError},                                      // ...unless it was to count events
	} {
		if _, code := runCLI(t, watchCmd(), addr, tc.args...); code != tc.code {
			t.Errorf("watch %v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}
