package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/internal/testkit"
)

// rhizonAt runs the CLI against node p with the cluster's token.
func rhizonAt(t *testing.T, p *nodeProc, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "RHIZON_ADDR="+p.grpc, "RHIZON_TOKEN="+clusterToken)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out) + string(ee.Stderr), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("rhizon %v: %v", args, err)
	}
	return string(out), 0
}

// Three `rhizon node` processes declaring --document-types user:age list the
// documents of all 8 shards through any node, in id order and by the age
// index; a node restarted with another declaration is reported by its peers
// and is itself FAILED.
func TestCluster_ListsDocumentsAcrossShards(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.args = append(p.args, "--document-types", "user:age")
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)
	var want []string
	for i := range 40 {
		id := fmt.Sprintf("u%02d", i)
		p := c.nodes[i%3]
		out, code := rhizonAt(t, p, "send", "user/"+id, "create", fmt.Sprintf(`{"doc":{"age":%d}}`, i%7), "--workspace", "w")
		if code != 0 {
			t.Fatalf("create %s through %s: exit %d %s", id, p.id, code, out)
		}
		want = append(want, id)
	}
	for _, p := range c.nodes {
		out, code := rhizonAt(t, p, "list", "user", "--workspace", "w", "--all", "--limit", "9", "-o", "json")
		var got listOut
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
			t.Fatalf("list through %s: exit %d %s", p.id, code, out)
		}
		if !slices.Equal(got.ids(), want) || got.Count != 40 {
			t.Fatalf("list through %s = %v (count %d)", p.id, got.ids(), got.Count)
		}
		shards := map[uint32]bool{}
		page, code := rhizonAt(t, p, "list", "user", "--workspace", "w", "--limit", "1000", "-o", "json")
		var full struct {
			Items []struct {
				Shard uint32 `json:"shard"`
			} `json:"items"`
		}
		if code != 0 || json.Unmarshal([]byte(page), &full) != nil {
			t.Fatalf("list through %s: %s", p.id, page)
		}
		for _, it := range full.Items {
			shards[it.Shard] = true
		}
		if len(shards) < 5 {
			t.Fatalf("the 40 documents sit on %d shards; the test needs a spread", len(shards))
		}
	}
	// age = 3: u03, u10, u17, u24, u31, u38 (in id order within the value)
	out, code := rhizonAt(t, c.nodes[1], "list", "user", "--workspace", "w", "--where", "age=3", "-o", "json")
	var eq listOut
	if code != 0 || json.Unmarshal([]byte(out), &eq) != nil || !slices.Equal(eq.ids(), []string{"u03", "u10", "u17", "u24", "u31", "u38"}) {
		t.Fatalf("where age=3 through n2: exit %d %s", code, out)
	}

	// n3 comes back declaring another type: n1 reports it and is DEGRADED
	// (one peer of two differs); n3, differing from both, is FAILED.
	n3 := c.nodes[2]
	n3.kill()
	n3.args = append(n3.args, "--document-types", "invoice")
	n3.start(t)
	testkit.Poll{Timeout: 60 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "n1 reports n3's document types", func() error {
		st, err := c.status(c.nodes[0])
		if err != nil {
			return err
		}
		m := strings.Join(st.GetDocumentTypeMismatches(), " | ")
		if !strings.Contains(m, "node n3") || !strings.Contains(m, "invoice is declared there, not here") || st.GetHealth() != "DEGRADED" {
			return fmt.Errorf("n1 health %s, mismatches %q", st.GetHealth(), m)
		}
		st3, err := c.status(n3)
		if err != nil {
			return err
		}
		if st3.GetHealth() != "FAILED" {
			return fmt.Errorf("n3 health %s %v", st3.GetHealth(), st3.GetHealthReasons())
		}
		return nil
	})
}
