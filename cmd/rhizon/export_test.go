package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A killed `rhizon dev` node is exported, the file imported into a new
// directory, and `rhizon replay` of the import reports what replay of the
// original does: identical, with the same counts and hashes. A corrupt
// byte makes import fail with exit 1 naming the checksum and leave nothing.
func TestCLI_ExportImportReplayIsIdentical(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startDev(t, dir)
	for i, args := range [][]string{
		{"send", "counter/c1", "add", `{"amount":5}`},
		{"send", "counter/c1", "add", `{"amount":2}`, "--expected-version", "1"},
		{"send", "counter/c2", "add", `{"amount":2}`, "--expected-version", "7"},
		{"send", "kv/doc", "create", `{"doc":{"a":1}}`},
		{"send", "lock/l", "acquire", `{"owner":"o","ttl_ms":30000}`},
		// A violation: its audit stream's place needs the cluster's shard
		// count, which the export carries.
		{"send", "counter/c3", "add", `{"amount":1}`, "--tenant", "someone-else"},
	} {
		if _, code := p.rhizon(t, args...); code != 0 && i != 2 && i != 5 {
			t.Fatalf("%v: exit %d", args, code)
		}
	}
	p.kill()

	work := t.TempDir()
	file := filepath.Join(work, "prod.rhzx")
	out, code := p.rhizon(t, "export", "--data-dir", dir, "-o", file)
	if code != 0 || !strings.Contains(out, "exported shards") {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	imported := filepath.Join(work, "laptop")
	if out, code := p.rhizon(t, "import", file, "--data-dir", imported); code != 0 {
		t.Fatalf("import: exit %d\n%s", code, out)
	}
	want, code := p.rhizon(t, "replay", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("replay of the original: exit %d\n%s", code, want)
	}
	got, code := p.rhizon(t, "replay", "--data-dir", imported)
	if code != 0 || got != want || !strings.Contains(got, "identical") || strings.Contains(got, "DIVERGED") {
		t.Fatalf("replay of the import: exit %d\n%s\nof the original:\n%s", code, got, want)
	}

	// One shard only.
	one := filepath.Join(work, "one.rhzx")
	if out, code := p.rhizon(t, "export", "--data-dir", dir, "--shard", "0", "-o", one); code != 0 || !strings.Contains(out, "shards [0]") {
		t.Fatalf("export of shard 0: exit %d\n%s", code, out)
	}

	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	bad := filepath.Join(work, "bad.rhzx")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(work, "bad")
	cmd := exec.Command(binary, "import", bad, "--data-dir", dest)
	msg, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != exitError || !strings.Contains(string(msg), "CRC-32C mismatch") {
		t.Fatalf("import of a corrupt file: %v, want exit %d\n%s", err, exitError, msg)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("a refused import left %s: %v", dest, err)
	}
	if _, code := p.rhizon(t, "export", "--data-dir", t.TempDir(), "-o", filepath.Join(work, "x")); code != exitUsage {
		t.Fatalf("export of an empty directory: exit %d, want %d", code, exitUsage)
	}
}
