package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// binary is the rhizon binary built once for the process tests. They run in
// parallel (each on its own free ports and temporary directories: they wait
// on elections, not CPU), except the few that set environment variables.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// make test-quick: no processes; the tests that need the binary skip.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "rhizon-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "rhizon")
	// With the test-only failpoints compiled in (they fire only when
	// RHIZON_FAILPOINTS names them) and the planted nondeterministic actor
	// (testactors_on.go; deterministic unless RHIZON_PLANTED_SKEW differs).
	build := exec.Command("go", "build", "-tags", "failpoints,rhizon_testactors", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build rhizon:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needBinary skips a test that runs rhizon processes in -short mode.
func needBinary(t testing.TB) {
	t.Helper()
	if binary == "" {
		t.Skip("runs rhizon processes: not in -short mode")
	}
}

// syncBuffer is a bytes.Buffer safe for the process's writer and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// devProcess is a real `rhizon dev` process.
type devProcess struct {
	cmd   *exec.Cmd
	addr  string
	http  string
	nats  string
	token string
	done  chan error
}

// startDev starts `rhizon dev` on free loopback ports and waits for its
// banner. The process is SIGKILLed at the end of the test if still running.
func startDev(t *testing.T, dataDir string, env ...string) *devProcess {
	t.Helper()
	needBinary(t)
	cmd := exec.Command(binary, "dev", "--data-dir", dataDir, "--shards", "4",
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--token-file", filepath.Join(dataDir, "token.json"), "--log-level", "warn")
	// One Raft group per shard unless env says otherwise (the last value
	// of a variable wins): the tests name shards where a grouped node
	// names groups (see newTestCluster).
	cmd.Env = append(append(os.Environ(), "RHIZON_RAFT_GROUPS=4"), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, done: make(chan error, 1)}
	t.Cleanup(func() { p.kill() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		p.done <- cmd.Wait()
	}()
	timeout := time.After(60 * time.Second)
	for p.addr == "" || p.token == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("rhizon dev exited before it was ready:\n%s", stderr.String())
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "gRPC:"); ok {
				p.addr = strings.Fields(v)[0]
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "HTTP/JSON:"); ok {
				p.http = strings.Fields(v)[0]
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "NATS:"); ok {
				p.nats = strings.Fields(v)[0]
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "token:"); ok {
				p.token = strings.TrimSpace(v)
			}
		case <-timeout:
			t.Fatalf("rhizon dev not ready in 60s:\n%s", stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	return p
}

func (p *devProcess) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// rhizon runs the CLI against p and returns stdout and the exit code.
func (p *devProcess) rhizon(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "RHIZON_ADDR="+p.addr, "RHIZON_TOKEN="+p.token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("rhizon %v: %v", args, err)
	}
	if code != 0 {
		t.Logf("rhizon %v: exit %d, stderr: %s", args, code, errb.String())
	}
	return out.String(), code
}

type sendResult struct {
	Accepted  bool   `json:"accepted"`
	Duplicate bool   `json:"duplicate"`
	Version   uint64 `json:"version"`
	Reason    string `json:"reason"`
	Code      string `json:"code"`
	Events    []struct {
		ID string `json:"id"`
	} `json:"events"`
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

func TestPromise_ExactlyOnce_SurvivesKill9OfDevProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, dir)
	out, code := p.rhizon(t, "send", "counter/c1", "cmd.counter.add", `{"amount":5}`, "--idempotency-key", "k1", "-o", "json")
	first := decode[sendResult](t, out)
	if code != 0 || !first.Accepted || first.Version != 1 || len(first.Events) != 1 {
		t.Fatalf("first send: exit %d %+v", code, first)
	}
	// The verb alone is accepted too.
	if _, code := p.rhizon(t, "send", "counter/c1", "add", `{"amount":2}`, "--idempotency-key", "k2"); code != 0 {
		t.Fatalf("second send: exit %d", code)
	}

	p.kill() // SIGKILL: no shutdown path runs.
	p = startDev(t, dir)

	out, code = p.rhizon(t, "send", "counter/c1", "cmd.counter.add", `{"amount":5}`, "--idempotency-key", "k1", "-o", "json")
	again := decode[sendResult](t, out)
	if code != 0 || !again.Duplicate || again.Version != 1 || len(again.Events) != 1 || again.Events[0].ID != first.Events[0].ID {
		t.Fatalf("re-send after kill -9: exit %d %+v, want the original result (event %s)", code, again, first.Events[0].ID)
	}
	out, code = p.rhizon(t, "get", "counter/c1", "-o", "json")
	got := decode[struct {
		Version uint64
		State   struct{ Value int64 }
	}](t, out)
	if code != 0 || got.Version != 2 || got.State.Value != 7 {
		t.Fatalf("state after kill -9: exit %d %+v, want version 2 value 7", code, got)
	}
}

func TestCLI_ExitStatusAndJSONOutput(t *testing.T) {
	p := startDev(t, t.TempDir())
	out, code := p.rhizon(t, "send", "account/acc1", "withdraw", `{"amount":10}`, "-o", "json")
	r := decode[sendResult](t, out)
	if code != exitRejected || r.Accepted || r.Reason != "business" || r.Code != "not_open" {
		t.Fatalf("withdraw from an unopened account: exit %d %+v", code, r)
	}
	// A violation (a tenant the token may not use) is refused and audited:
	// it exits like a rejection, as the README's exit statuses say.
	if out, code := p.rhizon(t, "send", "counter/c1", "add", `{"amount":1}`, "--tenant", "other"); code != exitRejected {
		t.Fatalf("send into another tenant (a violation): exit %d, want %d; output %s", code, exitRejected, out)
	}
	if _, code := p.rhizon(t, "send", "counter/c1", "add", `{"amount":`); code != exitError {
		t.Fatalf("malformed payload: exit %d, want %d", code, exitError)
	}
	if _, code := p.rhizon(t, "send", "nocolon", "add"); code != exitUsage {
		t.Fatalf("bad target: exit %d, want %d", code, exitUsage)
	}
	if _, code := p.rhizon(t, "send", "counter/c1", "add", `{"amount":1}`, "--expected-version", "0"); code != 0 {
		t.Fatalf("send with expected version 0: exit %d", code)
	}
	out, code = p.rhizon(t, "send", "counter/c1", "add", `{"amount":1}`, "--expected-version", "0", "-o", "json")
	if r := decode[sendResult](t, out); code != exitRejected || r.Reason != "conflict" {
		t.Fatalf("stale expected version: exit %d %+v", code, r)
	}
	out, code = p.rhizon(t, "history", "counter/c1", "--rejections", "-o", "json")
	h := decode[struct {
		Records []map[string]json.RawMessage `json:"records"`
	}](t, out)
	if code != 0 || len(h.Records) != 2 {
		t.Fatalf("history: exit %d, %d records (want the event and the conflict)", code, len(h.Records))
	}
	out, code = p.rhizon(t, "status", "-o", "json")
	st := decode[struct {
		Shards []struct {
			Role      string `json:"role"`
			StateHash string `json:"state_hash"`
		} `json:"shards"`
	}](t, out)
	// The dev token is a tenant's: its Status routes, but shows no state
	// hashes (other tenants' activity); that is the admin role's.
	if code != 0 || len(st.Shards) != 4 || st.Shards[0].Role != "Leader" || st.Shards[0].StateHash != "" {
		t.Fatalf("status: exit %d %+v", code, st)
	}
	resp, err := http.Get(p.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`rhizon_commands_total{`, `result="conflict"`, `result="accepted"`, "rhizon_batch_size_bucket", "rhizon_submit_duration_seconds_bucket", `rhizon_shards_leading{`, "rhizon_rebalancing_pending"} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	// The embedded NATS server is reachable and has JetStream.
	nc, err := nats.Connect(p.nats, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to embedded NATS %q: %v", p.nats, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	jctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(jctx); err != nil {
		t.Fatalf("JetStream on the embedded server: %v", err)
	}
	// The banner's URL carries the node credentials. Without credentials
	// nobody connects; with the bearer token a producer connects, in an
	// account of its own, without the JetStream API.
	anonURL, err := url.Parse(p.nats)
	if err != nil || anonURL.User == nil {
		t.Fatalf("the dev banner's NATS URL %q has no credentials (%v)", p.nats, err)
	}
	anonURL.User = nil
	if anon, err := nats.Connect(anonURL.String(), nats.Timeout(5*time.Second)); err == nil {
		anon.Close()
		t.Fatal("a client without credentials connected to the embedded NATS")
	}
	prod, err := nats.Connect(anonURL.String(), nats.Token(p.token), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect with the dev token: %v", err)
	}
	defer prod.Close()
	ajs, _ := jetstream.New(prod)
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer acancel()
	if _, err := ajs.AccountInfo(actx); err == nil {
		t.Fatal("the JetStream API answered a producer")
	}
	// drain needs a node id (or RHIZON_NODE_ID) and a token with role admin.
	if _, code := p.rhizon(t, "drain"); code != exitUsage {
		t.Fatalf("drain without a node id: exit %d, want %d", code, exitUsage)
	}
	t.Setenv("RHIZON_NODE_ID", "dev")
	if _, code := p.rhizon(t, "drain"); code != exitError {
		t.Fatalf("drain by a user token: exit %d, want %d (permission denied)", code, exitError)
	}
	if out, code := p.rhizon(t, "version"); code != 0 || strings.TrimSpace(out) == "" {
		t.Fatalf("version: %q exit %d", out, code)
	}
}
