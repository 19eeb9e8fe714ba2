package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/rhizon/rhizon/gateway"
)

// A quotas: section of the YAML config reaches --quotas as inline JSON that
// gateway.LoadQuotas reads; a flag value wins over it.
func TestConfigQuotasSection(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte("data-dir: /x\nquotas:\n  default: {rate: 5, burst: 7}\n  tenants: {big: {rate: -1}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	var f nodeFlags
	fs.StringVar(&f.config, "config", cfg, "")
	fs.StringVar(&f.dataDir, "data-dir", "", "")
	fs.StringVar(&f.quotas, "quotas", "", "")
	if err := applyConfig(fs); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.LoadQuotas(f.quotas); err != nil {
		t.Fatalf("quotas from the config %q: %v", f.quotas, err)
	}
	if f.dataDir != "/x" {
		t.Errorf("data-dir %q", f.dataDir)
	}
}

// TestNode_NegativeProposeLingerRefused: a negative --propose-linger is a
// usage error naming the flag, before the node creates anything.
func TestNode_NegativeProposeLingerRefused(t *testing.T) {
	t.Parallel()
	needBinary(t)
	dir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a node that starts is killed
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "dev", "--propose-linger=-1ms", "--data-dir", dir).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(string(out), "--propose-linger") {
		t.Fatalf("rhizon dev --propose-linger=-1ms: %v\n%s", err, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the refused node created %s (%v)", dir, err)
	}
}
