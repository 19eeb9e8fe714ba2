package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
)

// counterModule builds examples/wasm/counter as `make wasm-examples` does.
func counterModule(t *testing.T) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "counter.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "../examples/wasm/counter")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=wasip1 GOARCH=wasm go build ../examples/wasm/counter: %v\n%s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testWasmCounter runs wasm-counter against the node at addr: setup deploys
// and activates the module (twice: the second changes nothing), every
// acknowledged increment is in the WASM counters' state, and without a
// module the setup says how to build one.
func testWasmCounter(t *testing.T, addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := testWorkload(t, "wasm-counter", 20)
	w.EntityPrefix = "wasm-"

	bare, err := NewRhizon(RhizonConfig{Addrs: []string{addr}, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if err := bare.Setup(ctx, w); err == nil || !strings.Contains(err.Error(), "make wasm-examples") {
		t.Fatalf("setup without a module: %v, want how to build it", err)
	}

	module := counterModule(t)
	target, err := NewRhizon(RhizonConfig{Addrs: []string{addr}, Token: testToken, WasmModule: module})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	for range 2 {
		if err := target.Setup(ctx, w); err != nil {
			t.Fatalf("setup: %v", err)
		}
	}
	c, err := client.Dial(addr, client.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.GetActiveRevisions()[DefaultWasmType], WasmRevision(module); got != want {
		t.Fatalf("active revision of %s: %q, want %q (all: %v)", DefaultWasmType, got, want, st.GetActiveRevisions())
	}

	const conc = 4
	res, err := Run(ctx, target, Config{Workload: w, Concurrency: conc, Duration: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wasm-counter: %d ops, %.0f ops/s, p50 %.2fms p99 %.2fms", res.Ops, res.Throughput, res.Latency.P50, res.Latency.P99)
	if res.OK == 0 || res.OK != res.Ops || res.ErrorsTotal() != 0 {
		t.Fatalf("ops %d ok %d rejected %d errors %v %v", res.Ops, res.OK, res.Rejected, res.Errors, res.ErrorSamples)
	}
	// Operations still in flight when the window closed may have applied
	// uncounted: at most one per worker.
	var sum uint64
	for i := range w.Entities {
		resp, err := c.Get(ctx, &pb.GetRequest{Address: &pb.Address{ActorType: DefaultWasmType, EntityId: w.Entity(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.GetFound() {
			continue
		}
		var s struct{ Value uint64 }
		if err := json.Unmarshal(resp.GetState(), &s); err != nil {
			t.Fatalf("%s/%s state %q: %v", DefaultWasmType, w.Entity(i), resp.GetState(), err)
		}
		sum += s.Value
	}
	if sum < res.OK || sum > res.OK+conc {
		t.Fatalf("the WASM counters sum to %d after %d acknowledged increments", sum, res.OK)
	}
}
