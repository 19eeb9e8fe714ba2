package console

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// reply is a response read whole.
type reply struct {
	StatusCode int
	Header     http.Header
	Body       string
}

func get(t *testing.T, h http.Handler, method, path string) reply {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	resp := rec.Result()
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func TestHandlerServesTheAssets(t *testing.T) {
	h := Handler()
	resp := get(t, h, http.MethodGet, "/ui/")
	if resp.StatusCode != 200 || !strings.Contains(resp.Body, `<script type="module" src="js/app.js">`) {
		t.Fatalf("GET /ui/: %d %s", resp.StatusCode, resp.Body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Fatalf("CSP %q", csp)
	}
	for path, ctype := range map[string]string{"/ui/js/app.js": "javascript", "/ui/app.css": "text/css", "/ui/index.html": ""} {
		resp := get(t, h, http.MethodGet, path)
		if path == "/ui/index.html" {
			// The file server sends index.html to its directory.
			if resp.StatusCode != http.StatusMovedPermanently {
				t.Errorf("%s: %d", path, resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("%s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp := get(t, h, http.MethodGet, "/ui"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := get(t, h, http.MethodPost, "/ui/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui/: %d", resp.StatusCode)
	}
	if resp := get(t, h, http.MethodGet, "/ui/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing file: %d", resp.StatusCode)
	}
}

// Everything the pages load is embedded: no CDN, no web font, and every
// module an import names exists.
func TestAssetsAreSelfContained(t *testing.T) {
	assets := Assets()
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	imports := regexp.MustCompile(`from '\./([a-z]+\.js)'`)
	n := 0
	err := fs.WalkDir(assets, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := fs.ReadFile(assets, path)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "") // the SVG namespace, not a fetch
		if m := external.FindString(text); m != "" {
			t.Errorf("%s names an outside address %q", path, m)
		}
		if strings.Contains(text, "@import") || strings.Contains(text, "@font-face") {
			t.Errorf("%s imports a stylesheet or a font", path)
		}
		if lines := strings.Count(text, "\n"); lines > 800 {
			t.Errorf("%s has %d lines; keep files under 800", path, lines)
		}
		for _, m := range imports.FindAllStringSubmatch(text, -1) {
			if _, err := fs.Stat(assets, "js/"+m[1]); err != nil {
				t.Errorf("%s imports %s, which is not embedded", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("only %d files embedded", n)
	}
}
