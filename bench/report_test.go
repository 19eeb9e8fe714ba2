package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkSVG parses an SVG document fully and checks its root element.
func checkSVG(t *testing.T, name string, r io.Reader) {
	t.Helper()
	dec := xml.NewDecoder(r)
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: not well-formed XML: %v", name, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", name, root)
	}
}

// fakeResults runs closed loops against a fake target, one per duration,
// with concurrency 1, 4, 16, ...
func fakeResults(t *testing.T, durations ...time.Duration) []*Result {
	t.Helper()
	var out []*Result
	for i, d := range durations {
		c := 1 << (2 * i)
		ft := &fakeTarget{fn: func(n uint64) (Outcome, error) {
			time.Sleep(time.Duration(n%5) * 100 * time.Microsecond)
			if n%9 == 0 {
				return Conflict, nil
			}
			return OK, nil
		}}
		res, err := Run(context.Background(), ft, Config{
			Workload: testWorkload(t, "w1-occ", 50), Concurrency: c, Duration: d,
		})
		if err != nil {
			t.Fatal(err)
		}
		res.Version = "test"
		out = append(out, res)
	}
	return out
}

func TestReport_JSONLinesAndSVGPlotsAreWellFormed(t *testing.T) {
	results := fakeResults(t, 1010*time.Millisecond, 200*time.Millisecond)
	// A run with no answered operation still plots.
	results = append(results, &Result{Workload: "w1-command", Target: "fake", Mode: "open", Concurrency: 8, Rate: 100,
		Errors: map[string]uint64{"timeout": 3}, Hist: &Histogram{}})

	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	var buf bytes.Buffer
	if err := WriteJSON(&buf, results); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	lines := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v", lines, err)
		}
		for _, k := range []string{"workload", "target", "mode", "concurrency", "duration_s", "ops", "throughput",
			"latency_ms", "errors", "version", "machine", "start", "per_second"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d lacks %q: %s", lines, k, sc.Bytes())
			}
		}
		lines++
	}
	if lines != len(results) {
		t.Fatalf("%d JSON lines for %d results", lines, len(results))
	}
	var first Result
	if err := json.Unmarshal(bytes.SplitN(buf.Bytes(), []byte("\n"), 2)[0], &first); err != nil {
		t.Fatal(err)
	}
	if first.Ops == 0 || first.Latency.P99 <= 0 || first.Latency.P50 > first.Latency.P99 || first.Machine.NumCPU == 0 || len(first.PerSecond) != 2 {
		t.Fatalf("decoded result: %+v", first)
	}

	files, err := WritePlots(path, results)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(results)+1 {
		t.Fatalf("plot files: %v", files)
	}
	for _, f := range files {
		if filepath.Dir(f) != dir || !strings.HasSuffix(f, ".svg") {
			t.Errorf("plot %s not next to %s", f, path)
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		checkSVG(t, f, fh)
		fh.Close()
	}
}

func TestReport_Table(t *testing.T) {
	results := fakeResults(t, 100*time.Millisecond)
	results[0].Errors["unavailable"] = 2
	results[0].ErrorSamples = map[string]string{"unavailable": "no leader for shard 3"}
	var buf bytes.Buffer
	if err := WriteTable(&buf, results); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"WORKLOAD", "P99.9 ms", "w1-occ", "closed", "unavailable 2", "no leader for shard 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
