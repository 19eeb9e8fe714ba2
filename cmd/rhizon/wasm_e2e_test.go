package main

import (
	"regexp"
	"strings"
	"testing"
)

// A user's WebAssembly actor (examples/wasm/counter, built with the one
// documented command) is loaded by `rhizon dev --wasm-actor` (here through
// RHIZON_WASM_ACTOR), takes commands, answers get, history and a live
// replay, and `actor list` shows it with its revision; killed, the node's data directory replays identically offline
// with the same module and does not without it.
func TestCLI_WasmActorOnADevNode(t *testing.T) {
	needBinary(t)
	t.Parallel()
	dir := t.TempDir()
	module := buildWasm(t, dir, "../../examples/wasm/counter", "counter.wasm")
	spec := "wcounter=" + module + "@1"
	p := startDev(t, dir, "RHIZON_WASM_ACTOR="+spec)
	if out, code := p.rhizon(t, "send", "wcounter/c1", "add", `{"amount":5}`, "-o", "json"); code != 0 || !decode[sendResult](t, out).Accepted {
		t.Fatalf("send: exit %d: %s", code, out)
	}
	if out, code := p.rhizon(t, "send", "wcounter/c1", "add", `{"amount":2}`); code != 0 {
		t.Fatalf("send: exit %d: %s", code, out)
	}
	// An unknown verb is refused at the gateway from the module's verb list.
	if out, code := p.rhizon(t, "send", "wcounter/c1", "sub", `{"amount":2}`); code == 0 {
		t.Fatalf("send sub: exit 0: %s", out)
	}
	out, code := p.rhizon(t, "send", "wcounter/c1", "add", `{"amount":9223372036854775807}`, "-o", "json")
	if r := decode[sendResult](t, out); code != exitRejected || r.Code != "overflow" {
		t.Fatalf("overflow: exit %d: %s", code, out)
	}
	if out, code := p.rhizon(t, "get", "wcounter/c1"); code != 0 || !strings.Contains(out, `{"value":7}`) {
		t.Fatalf("get: exit %d: %s", code, out)
	}
	if out, code := p.rhizon(t, "history", "wcounter/c1", "--rejections"); code != 0 ||
		strings.Count(out, "evt.wcounter.added") != 2 || !strings.Contains(out, "leaves the int64 range") {
		t.Fatalf("history: exit %d: %s", code, out)
	}
	out, code = p.rhizon(t, "actor", "list")
	if code != 0 || !regexp.MustCompile(`(?m)^wcounter +1 +- +dev +$`).MatchString(out) || !regexp.MustCompile(`(?m)^counter +2 +- +dev +$`).MatchString(out) {
		t.Fatalf("actor list: exit %d:\n%s", code, out)
	}
	if out, code := p.rhizon(t, "replay", "--entity", "wcounter/c1"); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("live replay: exit %d: %s", code, out)
	}
	p.kill()
	if out, code := p.rhizon(t, "replay", "--data-dir", dir, "--wasm-actor", spec); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("offline replay: exit %d: %s", code, out)
	}
	if out, code := p.rhizon(t, "replay", "--data-dir", dir); code == 0 {
		t.Fatalf("offline replay without the module: exit 0: %s", out)
	}
}
