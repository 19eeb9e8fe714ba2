package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The web console's browser tests drive a real headless Chromium through
// the DevTools protocol (chromedp). This file holds the browser plumbing;
// console_e2e_test.go holds the tests.

// browserBinaries are the names Debian's and others' Chromium packages
// install; CHROME_BIN names another.
var browserBinaries = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}

// findBrowser returns a Chromium binary. Without one the test is skipped,
// unless RHIZON_REQUIRE_BROWSER=1 (set by .ci/run), where it fails: CI must
// not pass by running no browser test.
func findBrowser(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROME_BIN"); p != "" {
		return p
	}
	for _, name := range browserBinaries {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("no browser binary found (looked for $CHROME_BIN and %s): install one with `apt-get install -y chromium`", strings.Join(browserBinaries, ", "))
	if os.Getenv("RHIZON_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; RHIZON_REQUIRE_BROWSER=1 makes this a failure")
	}
	t.Skip(msg + " (set RHIZON_REQUIRE_BROWSER=1 to fail instead)")
	return ""
}

// page is one browser tab of a test, bounded by the test's timeout, that
// saves screenshots to its artifacts directory.
type page struct {
	t     *testing.T
	ctx   context.Context
	dir   string
	shots int
}

// browsers admits one Chromium at a time: each takes hundreds of MiB and a
// core while it lays out, next to the node processes of the other tests.
var browsers = make(chan struct{}, 1)

// newPage starts a headless Chromium for t (closed at its end).
// tlsInsecure accepts the test CA's certificates.
func newPage(t *testing.T, total time.Duration, tlsInsecure bool) *page {
	t.Helper()
	needBinary(t)
	bin := findBrowser(t)
	browsers <- struct{}{}
	t.Cleanup(func() { <-browsers })
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	if tlsInsecure {
		opts = append(opts, chromedp.IgnoreCertErrors)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, total)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	dir := os.Getenv("RHIZON_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	p := &page{t: t, ctx: ctx, dir: dir}
	// Start the browser now, so its start-up is not charged to the first step.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	return p
}

// do runs steps, failing the test (with a screenshot and the page's text)
// when one fails.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fail(what, err)
	}
}

// eval returns a JavaScript expression's value.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluate "+expr, err)
	}
	return v
}

// until waits, up to total, for a JavaScript expression to be true in the
// page (checked every 100 ms inside the browser); an expression that
// throws counts as false.
func (p *page) until(what string, total time.Duration, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, total+5*time.Second)
	defer cancel()
	// A page still rendering may lack an element the expression reads: not
	// yet true rather than an error.
	expr = "(() => { try { return !!(" + expr + "); } catch (e) { return false; } })()"
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(total), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		p.fail(what, err)
	}
}

// within is until without failing: whether expr became true within total.
func (p *page) within(total time.Duration, expr string) bool {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, total+5*time.Second)
	defer cancel()
	expr = "(() => { try { return !!(" + expr + "); } catch (e) { return false; } })()"
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(total), chromedp.WithPollingInterval(100*time.Millisecond)))
	return err == nil
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	p.screenshot("failure")
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	p.t.Fatalf("%s: %v\npage text:\n%s", what, err, tail(text, 3000))
}

// screenshot saves the whole page as NN-name.png in the artifacts directory.
func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p.shots++
	f := filepath.Join(p.dir, fmt.Sprintf("%02d-%s.png", p.shots, name))
	if err := os.WriteFile(f, png, 0o644); err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p.t.Logf("screenshot %s", f)
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	return fmt.Sprintf("%q", s)
}

// The banner of `rhizon dev` / `make run` names the console's URL and the
// health endpoints, https with TLS on.
func TestBannerPrintsTheConsoleAndHealthURLs(t *testing.T) {
	for _, tc := range []struct {
		tls    bool
		scheme string
	}{{false, "http"}, {true, "https"}} {
		var b strings.Builder
		printBanner(&b, &nodeFlags{nodeID: "dev", shards: 8, dataDir: "./data", tokenFile: "./data/dev-token.json"}, true,
			"127.0.0.1:7400", "127.0.0.1:7401", "", "tok", tc.tls)
		for _, want := range []string{
			"  console:   " + tc.scheme + "://127.0.0.1:7401/ui/  (log in with a token)\n",
			"  health:    " + tc.scheme + "://127.0.0.1:7401/readyz  (READY, DEGRADED or FAILED, with reasons; liveness at /healthz)\n",
		} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("banner (TLS %v) lacks %q:\n%s", tc.tls, want, b.String())
			}
		}
	}
}
