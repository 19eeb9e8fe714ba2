package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/rhizon/rhizon/internal/testkit"
)

// runCLIErr runs one client command in this process and returns its stdout
// and the error main would print (nil on success).
func runCLIErr(t *testing.T, cmd *cobra.Command, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

func wantErr(t *testing.T, err error, code int, parts ...string) {
	t.Helper()
	var ee *exitErr
	if !errors.As(err, &ee) || ee.code != code {
		t.Fatalf("error %v: want exit %d", err, code)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q lacks %q", err, p)
		}
	}
}

func TestHints_AddrWithoutPortDialsTheGRPCPort(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"localhost": "localhost:7400", "127.0.0.1": "127.0.0.1:7400", "[::1]": "[::1]:7400", "::1": "[::1]:7400",
		"n1:7500": "n1:7500", "dns:///n1:7400": "dns:///n1:7400",
	} {
		if got := withDefaultPort(in); got != want {
			t.Errorf("withDefaultPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestHints_RefusedConnectionSaysToStartANode(t *testing.T) {
	t.Parallel()
	addr := refusingAddr(t)
	_, err := runCLIErr(t, statusCmd(), "", "--addr", addr, "--token", "x", "--timeout", "3s")
	wantErr(t, err, exitError, "no Rhizon node listens at "+addr, "make run", "--addr")
}

func TestHints_HTTPPortGivenAsGRPCSaysToUseTheGRPCPort(t *testing.T) {
	t.Parallel()
	// An HTTP/1 server, as a node's --http-addr is.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, err := runCLIErr(t, getCmd(), "", "counter/c1", "--addr", addr, "--token", "x", "--timeout", "3s")
	wantErr(t, err, exitError, "HTTP/JSON port", "gRPC port", "7400")
}

func TestHints_NoTokenSaysHowToPassOne(t *testing.T) {
	t.Parallel()
	addr := startAsyncGateway(t)
	_, err := runCLIErr(t, getCmd(), "", "counter/c1", "--addr", addr, "--timeout", "5s")
	wantErr(t, err, exitError, "missing bearer token", "--token", "RHIZON_TOKEN")
}

// A payload over the kernel's 128 KiB argument limit goes through a file or
// stdin.
func TestSend_PayloadFromFileAndStdinOver128KiB(t *testing.T) {
	t.Parallel()
	addr := startAsyncGateway(t)
	doc := map[string]string{"blob": strings.Repeat("x", 200<<10)}
	payload, _ := json.Marshal(map[string]any{"doc": doc})
	file := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLIErr(t, sendCmd(), "", "kv/big1", "create", "@"+file, "--addr", addr, "--token", asyncToken); err != nil {
		t.Fatalf("send @file: %v", err)
	}
	if _, err := runCLIErr(t, sendCmd(), string(payload), "kv/big2", "create", "-", "--addr", addr, "--token", asyncToken); err != nil {
		t.Fatalf("send -: %v", err)
	}
	for _, id := range []string{"big1", "big2"} {
		out, err := runCLIErr(t, getCmd(), "", "kv/"+id, "-o", "json", "--addr", addr, "--token", asyncToken)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			State struct {
				Doc map[string]string `json:"doc"`
			} `json:"state"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.State.Doc["blob"] != doc["blob"] {
			t.Fatalf("kv/%s: stored document differs (%v, %d bytes)", id, err, len(got.State.Doc["blob"]))
		}
	}
	_, err := runCLIErr(t, sendCmd(), "", "kv/big3", "create", "@"+file+".missing", "--addr", addr, "--token", asyncToken)
	wantErr(t, err, exitUsage, "payload @"+file+".missing")
}

// cli runs the rhizon binary and returns stdout, stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	needBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("rhizon %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

// TestDev_StatusWaitBannerAndQuietNATS starts `rhizon dev` at info level and
// runs `status --wait` at once, before the node listens: it returns once the
// node is ready. The banner names the binary as it was run, and the embedded
// NATS server's notices stay out of the log.
func TestDev_StatusWaitBannerAndQuietNATS(t *testing.T) {
	t.Parallel()
	needBinary(t)
	dir := t.TempDir()
	grpcAddr := testkit.FreeAddr(t)
	tokenFile := filepath.Join(dir, "token.json")
	cmd := exec.Command(binary, "dev", "--data-dir", dir, "--shards", "4",
		"--grpc-addr", grpcAddr, "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0",
		"--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--token-file", tokenFile, "--log-level", "info")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	// The token file appears before the node listens; status needs it.
	var token string
	testkit.Poll{Timeout: 30 * time.Second, Every: 50 * time.Millisecond}.EventuallyNil(t, "token file written", func() error {
		var err error
		token, err = firstToken(tokenFile)
		return err
	})
	out, errOut, code := cli(t, "status", "--wait", "--timeout", "60s", "--addr", grpcAddr, "--token", token)
	if code != 0 || !strings.HasPrefix(out, "ready: 4 shards have leaders") {
		t.Fatalf("status --wait: exit %d\n%s\n%s\nnode:\n%s", code, out, errOut, stderr.String())
	}
	// Ready means async commands are accepted at once.
	if out, errOut, code := cli(t, "send", "counter/c1", "add", `{"amount":1}`, "--async", "--addr", grpcAddr, "--token", token); code != 0 {
		t.Fatalf("send --async right after status --wait: exit %d\n%s%s", code, out, errOut)
	}
	testkit.Poll{Timeout: 30 * time.Second, Every: 50 * time.Millisecond}.EventuallyNil(t, "banner printed", func() error {
		if !strings.Contains(stdout.String(), "try:") {
			return errors.New("no banner yet")
		}
		return nil
	})
	if want := binary + " send counter/c1"; !strings.Contains(stdout.String(), want) {
		t.Errorf("banner lacks %q:\n%s", want, stdout.String())
	}
	logs := stderr.String()
	if !strings.Contains(logs, "node ready") {
		t.Errorf("no info-level log of the node:\n%s", logs)
	}
	for _, banner := range []string{"Starting nats-server", "Version:", "Starting JetStream"} {
		if strings.Contains(logs, banner) {
			t.Errorf("the embedded NATS notice %q is logged at --log-level info", banner)
		}
	}
}

// A node alone whose cluster needs two: status says plainly there is no
// cluster, and status --wait gives up at its --timeout saying why.
func TestNode_StatusSaysNoClusterYet(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 0, time.Minute)
	p := c.add(true, 2)
	p.start(t)
	var out string
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(t, "status answers", func() error {
		o, e, code := cli(t, "status", "--addr", p.grpc, "--token", clusterToken, "--timeout", "5s")
		if code != 0 {
			return fmt.Errorf("status: exit %d: %s", code, e)
		}
		out = o
		return nil
	})
	if !strings.HasPrefix(out, "no cluster yet: node n1") || !strings.Contains(out, "--bootstrap-expect") {
		t.Fatalf("status of a node without a cluster:\n%s", out)
	}
	_, errOut, code := cli(t, "status", "--wait", "--addr", p.grpc, "--token", clusterToken, "--timeout", "2s")
	if code != exitError || !strings.Contains(errOut, "not ready after --timeout 2s: no cluster yet") {
		t.Fatalf("status --wait without a cluster: exit %d: %s", code, errOut)
	}
}

// A second dev node whose NATS port is taken fails at once, naming the
// port and the flag that moves it.
func TestDev_NATSPortInUseFailsFastAndNamesTheFlag(t *testing.T) {
	t.Parallel()
	needBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	start := time.Now()
	cmd := exec.Command(binary, "dev", "--data-dir", dir, "--nats-addr", l.Addr().String(),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitError {
		t.Fatalf("dev with its NATS port taken: %v, want exit %d", err, exitError)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to fail; the embedded server's own wait is 10 s", d)
	}
	msg := bufio.NewScanner(strings.NewReader(errb.String()))
	found := false
	for msg.Scan() {
		line := msg.Text()
		if strings.Contains(line, "--nats-addr "+l.Addr().String()) && strings.Contains(line, "in use") {
			found = true
		}
	}
	if !found {
		t.Fatalf("stderr does not say the NATS port is in use and which flag moves it:\n%s", errb.String())
	}
}

// refusingAddr reserves a loopback port that refuses connections: a socket
// bound without SO_REUSEADDR and never listening. A port freed by testkit.FreePort
// could be taken meanwhile by a process of a parallel test.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
