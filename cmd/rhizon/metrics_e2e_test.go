package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rhizon/rhizon/internal/testkit"
)

// Every label value a node exports is printable UTF-8: a number converted
// with string() once gave rhizon_ingress_commands_total a result="\x01".
// The node here has applied commands from the JetStream ingress, so the
// ingress counters are among the series scraped.
func TestDev_MetricsLabelValuesArePrintable(t *testing.T) {
	p := startDev(t, t.TempDir())
	for i := range 3 {
		if out, code := p.rhizon(t, "send", "counter/m1", "add", `{"amount":1}`, "--async", "--idempotency-key", fmt.Sprint("m1-", i)); code != 0 {
			t.Fatalf("send --async: exit %d %s", code, out)
		}
	}
	var body []byte
	testkit.Eventually(t, 30*time.Second, "the ingress counter counts the three async commands", func() (bool, string) {
		body = scrape(t, p.http+"/metrics")
		n := sumSeries(body, "rhizon_ingress_commands_total")
		return n >= 3, fmt.Sprintf("rhizon_ingress_commands_total = %v", n)
	})
	for _, bad := range unprintableLabels(body) {
		t.Errorf("label value not printable UTF-8: %s", bad)
	}
	if n := sumSeries(body, "rhizon_ingress_commands_total", `result="accepted"`); n != 3 {
		t.Errorf("rhizon_ingress_commands_total{result=\"accepted\"} = %v, want 3", n)
	}
}

// scrape GETs a Prometheus text exposition.
func scrape(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return b
}

// sumSeries adds the values of the samples of metric whose labels contain
// every one of want (`name="value"` each).
func sumSeries(body []byte, metric string, want ...string) float64 {
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, metric+"{") && !strings.HasPrefix(l, metric+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		var v float64
		if i := strings.LastIndexByte(l, ' '); ok && i > 0 {
			if _, err := fmt.Sscan(l[i+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// unprintableLabels returns, for every sample line, the label values that
// are not valid UTF-8 or hold a non-printable rune (after the exposition
// format's escapes \\, \" and \n are undone).
func unprintableLabels(body []byte) []string {
	var bad []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		open := strings.IndexByte(l, '{')
		if open < 0 {
			continue
		}
		for _, v := range labelValues(l[open+1:]) {
			if !printable(v) {
				bad = append(bad, fmt.Sprintf("%q in %q", v, l))
			}
		}
	}
	return bad
}

// labelValues reads name="value" pairs up to the closing brace.
func labelValues(s string) []string {
	var out []string
	for {
		eq := strings.Index(s, `="`)
		if eq < 0 {
			return out
		}
		s = s[eq+2:]
		var v strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				if s[i] == 'n' {
					v.WriteByte('\n')
					continue
				}
			}
			v.WriteByte(s[i])
		}
		out = append(out, v.String())
		if i >= len(s) {
			return out
		}
		s = s[i+1:]
		if strings.HasPrefix(s, "}") {
			return out
		}
	}
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
