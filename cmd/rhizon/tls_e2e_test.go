package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testcerts"
	"github.com/rhizon/rhizon/internal/testkit"
)

// A dev node with --tls-cert serves gRPC and HTTP over TLS: the CLI and the
// health check connect with the CA, and fail without TLS or with a CA that
// did not sign the node's certificate.
func TestTLS_DevNodeServesTLSAndClientsVerifyIt(t *testing.T) {
	certs := testcerts.Write(t)
	p := startDev(t, t.TempDir(), "RHIZON_TLS_CERT="+certs.Cert, "RHIZON_TLS_KEY="+certs.Key)
	if !strings.HasPrefix(p.http, "https://") {
		t.Fatalf("the banner's HTTP address %q is not https", p.http)
	}

	t.Setenv("RHIZON_TLS_CA", certs.CA)
	if out, code := p.rhizon(t, "send", "counter/tls", "add", `{"amount":2}`, "-o", "json"); code != 0 || !strings.Contains(out, `"accepted": true`) {
		t.Fatalf("send with --tls-ca: exit %d, %s", code, out)
	}
	// The health check verifies the node's certificate too; the node is
	// SERVING once its JetStream streams exist (FAILED before).
	testkit.Poll{Timeout: 30 * time.Second, Every: 250 * time.Millisecond}.EventuallyNil(t, "health with --tls-ca SERVING", func() error {
		if out, code := p.rhizon(t, "health", "--addr", p.addr); code != 0 || strings.TrimSpace(out) != "SERVING" {
			return fmt.Errorf("exit %d, %q", code, out)
		}
		return nil
	})
	t.Setenv("RHIZON_TLS_CA", certs.OtherCA)
	if _, code := p.rhizon(t, "get", "counter/tls"); code != exitError {
		t.Fatalf("get verifying with another CA: exit %d, want %d", code, exitError)
	}
	t.Setenv("RHIZON_TLS_CA", "")
	if _, code := p.rhizon(t, "get", "counter/tls"); code != exitError {
		t.Fatalf("get over plaintext from a TLS node: exit %d, want %d", code, exitError)
	}

	pool := x509.NewCertPool()
	b, err := os.ReadFile(certs.CA)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("read CA: %v", err)
	}

	// The embedded NATS client port is TLS too: the banner says tls://, a
	// client trusting the CA gets JetStream, a plaintext one is refused.
	if !strings.HasPrefix(p.nats, "tls://") {
		t.Fatalf("the banner's NATS URL %q is not tls://", p.nats)
	}
	nc, err := nats.Connect(p.nats, nats.Timeout(5*time.Second), nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("NATS over TLS: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	jctx, jcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer jcancel()
	if _, err := js.AccountInfo(jctx); err != nil {
		t.Fatalf("JetStream over TLS: %v", err)
	}
	if c, err := nats.Connect("nats://"+strings.TrimPrefix(p.nats, "tls://"), nats.Timeout(2*time.Second)); err == nil {
		c.Close()
		t.Fatal("a plaintext NATS client connected to a TLS node")
	}
	// The bench's ingress workload: gRPC and NATS over TLS.
	cmd := benchCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetArgs([]string{"--addr", p.addr, "--token", p.token, "--nats", p.nats, "--tls-ca", certs.CA,
		"--workload", "ingress", "--concurrency", "2", "--warmup", "0s", "--duration", "1s", "--entities", "4", "--progress=false"})
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		t.Fatalf("bench ingress over TLS: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get(p.http + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over https: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz over https: %s", resp.Status)
	}
}

// Three nodes serving TLS forward to each other over TLS: a command sent to
// any node, whichever leads its shard, is applied; a plaintext client is
// refused.
func TestTLS_ClusterForwardsBetweenNodesOverTLS(t *testing.T) {
	t.Parallel()
	certs := testcerts.Write(t)
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.args = append(p.args, "--tls-cert", certs.Cert, "--tls-key", certs.Key, "--tls-ca", certs.CA)
	}
	ctls, err := clientTLS(certs.CA)
	if err != nil {
		t.Fatal(err)
	}
	c.clientOpts = []client.Option{client.WithTLS(ctls)}
	for _, p := range c.nodes {
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	// Of three nodes at least two lead fewer than all 8 shards, so some
	// commands are forwarded.
	c.submitThroughEach(8, "tls-")
	plain, err := client.Dial(c.nodes[0].grpc, client.WithToken(clusterToken), client.WithRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := plain.Status(ctx); err == nil {
		t.Fatal("a plaintext client got an answer from a TLS node")
	}
}

// Half a TLS configuration is a usage error that names what is missing,
// before the node creates anything.
func TestTLS_IncompleteFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	needBinary(t)
	certs := testcerts.Write(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", certs.Cert}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-ca", certs.CA}, "--tls-ca needs --tls-cert and --tls-key"},
		{[]string{"--tls-cert", certs.Cert, "--tls-key", certs.CA}, "--tls-key"},
	} {
		dir := t.TempDir()
		args := append([]string{"dev", "--data-dir", dir, "--token-file", filepath.Join(dir, "t.json")}, tc.args...)
		cmd := exec.Command(binary, args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(string(out), tc.want) {
			t.Errorf("rhizon %v: %v, %q; want exit %d naming %q", tc.args, err, out, exitUsage, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "t.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("rhizon %v wrote the token file before refusing its flags (%v)", tc.args, err)
		}
	}
}
