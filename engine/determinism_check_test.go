package engine_test

import (
	"go/ast"
	"go/token"
	"go/types"
	"strings"
	"testing"

	"golang.org/x/tools/go/packages"
)

// forbidden are imports that would let deterministic code observe the world:
// the clock, the network, the disk, goroutine scheduling or global randomness.
var forbidden = map[string]bool{
	"time": true, "os": true, "os/exec": true, "syscall": true, "net": true, "net/http": true,
	"sync": true, "sync/atomic": true, "math/rand": true, "math/rand/v2": true, "crypto/rand": true,
	"runtime": true, "unsafe": true, "io/ioutil": true, "io/fs": true, "path/filepath": true,
}

// TestPromise_Determinism_CodeHasNoNondeterminism is the static half of the
// determinism promise (the dynamic half replays logs on two replicas). In the
// engine and in every actor it flags: a forbidden import, a go statement, a
// channel or select, and ranging over a map (Go randomises map order) unless
// the line is marked //rhizon:deterministic with a reason.
func TestPromise_Determinism_CodeHasNoNondeterminism(t *testing.T) {
	cfg := &packages.Config{Mode: packages.NeedName | packages.NeedFiles | packages.NeedImports |
		packages.NeedSyntax | packages.NeedTypes | packages.NeedTypesInfo}
	pkgs, err := packages.Load(cfg,
		"github.com/rhizon/rhizon/engine",
		"github.com/rhizon/rhizon/actor",
		"github.com/rhizon/rhizon/actor/builtin",
		"github.com/rhizon/rhizon/engine/memstore")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 4 {
		t.Fatalf("loaded %d packages, want 4", len(pkgs))
	}
	for _, p := range pkgs {
		for _, e := range p.Errors {
			t.Fatalf("%s: %v", p.PkgPath, e)
		}
		for path := range p.Imports { //rhizon:deterministic test code
			if forbidden[path] {
				t.Errorf("%s imports %q: deterministic code may not use the clock, network, disk, goroutines or global randomness", p.PkgPath, path)
			}
		}
		for _, f := range p.Syntax {
			checkFile(t, p.Fset, p.TypesInfo, f)
		}
	}
}

func checkFile(t *testing.T, fset *token.FileSet, info *types.Info, f *ast.File) {
	marked := map[int]bool{}
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			if strings.Contains(c.Text, "rhizon:deterministic") {
				marked[fset.Position(c.Slash).Line] = true
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		pos := func() token.Position { return fset.Position(n.Pos()) }
		switch n := n.(type) {
		case *ast.GoStmt:
			t.Errorf("%s: go statement in deterministic code", pos())
		case *ast.SelectStmt:
			t.Errorf("%s: select in deterministic code", pos())
		case *ast.SendStmt:
			t.Errorf("%s: channel send in deterministic code", pos())
		case *ast.ChanType:
			t.Errorf("%s: channel type in deterministic code", pos())
		case *ast.UnaryExpr:
			if n.Op == token.ARROW {
				t.Errorf("%s: channel receive in deterministic code", pos())
			}
		case *ast.RangeStmt:
			if tv, ok := info.Types[n.X]; ok {
				if _, isMap := tv.Type.Underlying().(*types.Map); isMap && !marked[pos().Line] {
					t.Errorf("%s: range over a map has random order; sort the keys (mark //rhizon:deterministic if order cannot matter)", pos())
				}
				if _, isChan := tv.Type.Underlying().(*types.Chan); isChan {
					t.Errorf("%s: range over a channel in deterministic code", pos())
				}
			}
		}
		return true
	})
}
