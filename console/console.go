// Package console is Rhizon's web console: plain HTML, CSS and JavaScript
// modules embedded in the binary and served at /ui/ by every node. It has no
// build step and loads nothing from outside the node (no CDN, no web fonts),
// so it works offline and behind TLS: every URL it fetches is relative to the
// page. It calls the node's own HTTP/JSON API with the bearer token the user
// typed in, so it sees and may do exactly what that token may.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// Prefix is where a node mounts Handler.
const Prefix = "/ui/"

//go:embed static
var static embed.FS

// Assets is the console's files, rooted at the directory Handler serves.
func Assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// Handler serves the console under Prefix: GET and HEAD only, "/ui"
// redirected to "/ui/". The assets change only with the binary, but the
// browser is told to revalidate them, so an upgraded node never serves a page
// with another version's scripts.
func Handler() http.Handler {
	files := http.StripPrefix(Prefix, http.FileServerFS(Assets()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, r.URL.Path+" takes GET", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Only the node itself: a page that can run nothing from elsewhere
		// cannot be made to send the token elsewhere either.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		files.ServeHTTP(w, r)
	})
}
