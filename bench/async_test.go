package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// asyncFake is a fakeTarget that also runs ingress, saga and WASM
// commands.
type asyncFake struct {
	fakeTarget
	ingress, sagas, wasm atomic.Uint64
	pairs                atomic.Uint64 // sagas whose inventory and payment have the same index
}

func (f *asyncFake) WasmCommand(_ context.Context, entity string) (Outcome, error) {
	f.note(entity)
	f.wasm.Add(1)
	return OK, nil
}

func (f *asyncFake) Ingress(_ context.Context, entity string) (Outcome, error) {
	f.note(entity)
	f.ingress.Add(1)
	return OK, nil
}

func (f *asyncFake) Saga(_ context.Context, inventory, payment string) (Outcome, error) {
	f.sagas.Add(1)
	if strings.TrimPrefix(inventory, "bench-inv-") == strings.TrimPrefix(payment, "bench-pay-") {
		f.pairs.Add(1)
	}
	return OK, nil
}

func TestAsync_WorkloadsRunOnlyOnTargetsThatHaveThem(t *testing.T) {
	ing, saga, wasm := testWorkload(t, "ingress", 0), testWorkload(t, "saga", 0), testWorkload(t, "wasm-counter", 0)
	if ing.Op != OpIngress || ing.Entities != DefaultEntities || saga.Op != OpSaga || saga.Entities != DefaultSagaEntities ||
		wasm.Op != OpWasm || wasm.Entities != DefaultEntities || wasm.ZipfS != 0 {
		t.Fatalf("workloads: %+v %+v %+v", ing, saga, wasm)
	}
	if saga.SagaInventory(3) != "bench-inv-3" || saga.SagaPayment(3) != "bench-pay-3" {
		t.Errorf("saga entities %s %s", saga.SagaInventory(3), saga.SagaPayment(3))
	}

	plain := &fakeTarget{}
	for _, w := range []Workload{ing, saga, wasm} {
		why := Unsupported(plain, w)
		if !strings.HasPrefix(why, "not applicable: fake has no") || why != PeerUnsupported("fake", w) {
			t.Errorf("%s on a plain target: %q", w.Name, why)
		}
		if _, err := Run(context.Background(), plain, Config{Workload: w, Concurrency: 1, Duration: time.Millisecond}); err == nil {
			t.Errorf("%s ran on a target without it", w.Name)
		}
	}
	if why := Unsupported(plain, testWorkload(t, "w1-occ", 10)); why != "" {
		t.Errorf("w1-occ unsupported: %s", why)
	}

	f := &asyncFake{}
	for _, w := range []Workload{ing, saga, wasm} {
		if why := Unsupported(f, w); why != "" {
			t.Fatalf("%s unsupported on an async target: %s", w.Name, why)
		}
		res, err := Run(context.Background(), f, Config{Workload: w, Concurrency: 2, Duration: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if res.Ops == 0 || res.OK != res.Ops {
			t.Errorf("%s: %d ops, %d ok", w.Name, res.Ops, res.OK)
		}
	}
	if f.ingress.Load() == 0 || f.sagas.Load() == 0 || f.pairs.Load() != f.sagas.Load() || f.wasm.Load() == 0 {
		t.Errorf("ingress %d, sagas %d (%d with a matching pair), wasm %d", f.ingress.Load(), f.sagas.Load(), f.pairs.Load(), f.wasm.Load())
	}
	if f.calls.Load() != 0 || f.badVer.Load() != 0 {
		t.Errorf("the async workloads called the synchronous operations %d times", f.calls.Load())
	}
}

func TestAsync_SkippedRunsKeepTheirRowsAndGetNoPlot(t *testing.T) {
	w := testWorkload(t, "saga", 0)
	ran := result("saga", "rhizon", 16, 500, 40, 90)
	ran.Hist = &Histogram{}
	ran.Hist.Record(40 * time.Millisecond)
	skipped := SkippedResult("etcd", Config{Workload: w, Concurrency: 16}, PeerUnsupported("etcd", w))
	if skipped.Mode != "closed" || skipped.Ops != 0 || skipped.Entities != DefaultSagaEntities {
		t.Fatalf("skipped result %+v", skipped)
	}
	failed := SetupFailedResult("rhizon", Config{Workload: testWorkload(t, "ingress", 0), Concurrency: 16}, errors.New("no NATS"))
	results := []*Result{ran, skipped}

	var b bytes.Buffer
	if err := WriteTable(&b, results); err != nil {
		t.Fatal(err)
	}
	table := b.String()
	if !strings.Contains(table, "saga on etcd skipped: not applicable: etcd has no actors to chain") {
		t.Errorf("no note in\n%s", table)
	}
	var etcdRow []string
	for line := range strings.SplitSeq(table, "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[1] == "etcd" {
			etcdRow = f
		}
	}
	if len(etcdRow) != 16 || etcdRow[5] != "skipped" {
		t.Errorf("etcd row %v in\n%s", etcdRow, table)
	}

	b.Reset()
	if err := WriteComparison(&b, results); err != nil {
		t.Fatal(err)
	}
	cmp := b.String()
	if f := row(t, cmp, "saga", "etcd", "16"); f[5] != "skipped" || f[9] != "n/a" {
		t.Errorf("comparison row %v", f)
	}
	if f := row(t, cmp, "saga", "rhizon", "16"); f[5] != "500" {
		t.Errorf("rhizon row %v", f)
	}

	// A failed setup is a row and a note of its own.
	b.Reset()
	if err := WriteTable(&b, []*Result{failed}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "ingress on rhizon failed: no NATS") || !strings.Contains(b.String(), " failed ") {
		t.Errorf("failed setup:\n%s", b.String())
	}
	if label, why := failed.NotRun(); label != "failed" || why != "setup failed: no NATS" {
		t.Errorf("NotRun %q %q", label, why)
	}

	// A skipped run survives the JSON round trip, and has no plot.
	path := filepath.Join(t.TempDir(), "runs.json")
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(fh, results); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	fh, err = os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(fh)
	fh.Close()
	if err != nil || len(back) != 2 || back[1].Skipped != skipped.Skipped {
		t.Fatalf("read back %v %v", back, err)
	}
	files, err := WritePlots(path, results)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || strings.Contains(strings.Join(files, " "), "etcd") {
		t.Errorf("plots %v", files)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
}

func TestAsync_WaitersDeliverOnceToTheRightOperation(t *testing.T) {
	var w waiters
	a, b := w.add("a"), w.add("b")
	w.deliver("b", Rejected)
	w.deliver("b", OK)      // a second event of the same command: ignored
	w.deliver("nobody", OK) // not waited for: ignored
	if got := <-b; got != Rejected {
		t.Errorf("b got %v", got)
	}
	select {
	case o := <-a:
		t.Errorf("a got %v", o)
	default:
	}
	w.remove("a")
	w.deliver("a", OK) // given up: nothing blocks, nothing arrives
	select {
	case o := <-a:
		t.Errorf("a got %v after remove", o)
	default:
	}
	if len(w.m) != 0 {
		t.Errorf("left: %v", w.m)
	}
}
