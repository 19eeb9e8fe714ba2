package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/client"
)

// testCerts are PEM files: a CA, a certificate it signed for 127.0.0.1
// with its key, and a second CA that signed nothing here.
type testCerts struct{ ca, cert, key, otherCA string }

func writeTestCerts(t *testing.T) testCerts {
	t.Helper()
	dir := t.TempDir()
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key, writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", der)
	}
	ca, caKey, caFile := newCA("ca")
	_, _, otherFile := newCA("other-ca")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "rhizon node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCerts{
		ca: caFile, otherCA: otherFile,
		cert: writePEM(t, filepath.Join(dir, "node.pem"), "CERTIFICATE", der),
		key:  writePEM(t, filepath.Join(dir, "node-key.pem"), "EC PRIVATE KEY", kder),
	}
}

func writePEM(t *testing.T, path, kind string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A dev node with --tls-cert serves gRPC and HTTP over TLS: the CLI and the
// health check connect with the CA, and fail without TLS or with a CA that
// did not sign the node's certificate.
func TestTLS_DevNodeServesTLSAndClientsVerifyIt(t *testing.T) {
	certs := writeTestCerts(t)
	p := startDev(t, t.TempDir(), "RHIZON_TLS_CERT="+certs.cert, "RHIZON_TLS_KEY="+certs.key)
	if !strings.HasPrefix(p.http, "https://") {
		t.Fatalf("the banner's HTTP address %q is not https", p.http)
	}

	t.Setenv("RHIZON_TLS_CA", certs.ca)
	if out, code := p.rhizon(t, "send", "counter/tls", "add", `{"amount":2}`, "-o", "json"); code != 0 || !strings.Contains(out, `"accepted": true`) {
		t.Fatalf("send with --tls-ca: exit %d, %s", code, out)
	}
	// Liveness: readiness waits for the JetStream streams, beside the point.
	if out, code := p.rhizon(t, "health", "--addr", p.addr); code != 0 || strings.TrimSpace(out) != "SERVING" {
		t.Fatalf("health with --tls-ca: exit %d, %q", code, out)
	}
	t.Setenv("RHIZON_TLS_CA", certs.otherCA)
	if _, code := p.rhizon(t, "get", "counter/tls"); code != exitError {
		t.Fatalf("get verifying with another CA: exit %d, want %d", code, exitError)
	}
	t.Setenv("RHIZON_TLS_CA", "")
	if _, code := p.rhizon(t, "get", "counter/tls"); code != exitError {
		t.Fatalf("get over plaintext from a TLS node: exit %d, want %d", code, exitError)
	}

	pool := x509.NewCertPool()
	b, err := os.ReadFile(certs.ca)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("read CA: %v", err)
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
	certs := writeTestCerts(t)
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.args = append(p.args, "--tls-cert", certs.cert, "--tls-key", certs.key, "--tls-ca", certs.ca)
	}
	ctls, err := clientTLS(certs.ca)
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
	certs := writeTestCerts(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", certs.cert}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-ca", certs.ca}, "--tls-ca needs --tls-cert and --tls-key"},
		{[]string{"--tls-cert", certs.cert, "--tls-key", certs.ca}, "--tls-key"},
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
