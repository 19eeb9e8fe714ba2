// Package rhizon holds tests of the repository as a whole (no code: the
// binary is cmd/rhizon).
package rhizon

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// layoutBlock returns the lines of the code block under the README's
// "## Layout" heading.
func layoutBlock(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n## Layout\n")
	if !ok {
		t.Fatal(`README.md has no "## Layout" section`)
	}
	_, rest, ok = strings.Cut(rest, "```\n")
	if !ok {
		t.Fatal(`README.md's "## Layout" section has no code block`)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal(`README.md's "## Layout" code block is not closed`)
	}
	return strings.Split(strings.TrimRight(block, "\n"), "\n")
}

// ignoredDirs are the top-level directories .gitignore names ("/bin/"):
// build and run output, not part of the tree.
func ignoredDirs(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(".gitignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "/") && strings.HasSuffix(l, "/") {
			dirs = append(dirs, strings.Trim(l, "/"))
		}
	}
	return dirs
}

// goPackages returns the directories below top that hold Go files
// (testdata and hidden directories excluded), relative to the root.
func goPackages(t *testing.T, top string) []string {
	t.Helper()
	var pkgs []string
	err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != top && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			if dir := filepath.Dir(path); dir != top && !slices.Contains(pkgs, dir) {
				pkgs = append(pkgs, dir)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// named tells whether the block names word as a whole path: not as the
// tail of a longer path or a prefix of a longer name.
func named(block, word string) bool {
	re := regexp.MustCompile(`(^|[^A-Za-z0-9_/.-])` + regexp.QuoteMeta(word) + `($|[^A-Za-z0-9_-])`)
	return re.MatchString(block)
}

// TestReadmeLayoutMatchesTheTree: the README's Layout block is how a
// newcomer finds their way, so every top-level directory has an entry of
// its own (a line starting "dir/"), every Go package below one is named
// (by its path, or by its path within its top-level directory, as the
// block's indented entries and prose do: "raftmux/", "logutil"), and every
// directory the block lists exists.
func TestReadmeLayoutMatchesTheTree(t *testing.T) {
	lines := layoutBlock(t)
	block := strings.Join(lines, "\n")
	entries := map[string]bool{} // the block's column-0 paths, without the slash
	var parent string            // the last column-0 path, for indented entries
	for _, l := range lines {
		first, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		if !strings.HasSuffix(first, "/") {
			continue // a continuation line of prose
		}
		path := strings.TrimSuffix(first, "/")
		if !strings.HasPrefix(l, " ") {
			parent, entries[path] = path, true
		} else if parent != "" && !strings.HasPrefix(path, parent+"/") {
			path = filepath.Join(parent, path) // "  raftmux/" under "cluster/"
		}
		if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
			t.Errorf("README.md's Layout lists %s/, which is not a directory: remove or rename its entry", path)
		}
	}
	top, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	ignored := ignoredDirs(t)
	for _, d := range top {
		name := d.Name()
		if !d.IsDir() || strings.HasPrefix(name, ".") || slices.Contains(ignored, name) {
			continue
		}
		if !hasEntry(entries, name) {
			t.Errorf("README.md's Layout has no line for the top-level directory %s/: add one saying what it holds", name)
		}
		for _, pkg := range goPackages(t, name) {
			within := strings.TrimPrefix(pkg, name+"/")
			if !named(block, pkg) && !named(block, within) {
				t.Errorf("README.md's Layout does not name the package %s (as %q or %q): add it to the %s/ entry", pkg, pkg+"/", within, name)
			}
		}
	}
}

// hasEntry tells whether entries holds dir or a path below it.
func hasEntry(entries map[string]bool, dir string) bool {
	for e := range entries {
		if e == dir || strings.HasPrefix(e, dir+"/") {
			return true
		}
	}
	return false
}
