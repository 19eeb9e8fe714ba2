package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/internal/testkit"
)

// A WebAssembly type's event changes shape between revisions, on a dev node
// and through the CLI: revision 1 (actor/wasm/testdata/profile1) records
// "named" at schema version 1; revision 2 (profile2) is deployed and
// activated, records version 2 from the state revision 1 wrote, and its
// sdk.Upcast makes history and watch show the old event as version 2; a
// live replay stays identical; an event its upcaster traps on makes history
// fail with Internal naming the event, and the node goes on serving.
func TestCLI_WasmUpcasterOnADevNode(t *testing.T) {
	needBinary(t)
	t.Parallel()
	dir := t.TempDir()
	v1 := buildWasm(t, dir, "../../actor/wasm/testdata/profile1", "profile1.wasm")
	v2 := buildWasm(t, dir, "../../actor/wasm/testdata/profile2", "profile2.wasm")
	p := startDev(t, dir)
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return cli(t, append(args, "--addr", p.addr, "--token", p.token)...)
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(args...)
		if code != 0 {
			t.Fatalf("rhizon %s: exit %d %s %s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	must("actor", "deploy", v1, "--type", "profile", "--revision", "1")
	must("actor", "activate", "--type", "profile", "--revision", "1")
	testkit.Poll{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "revision 1 takes commands", func() error {
		if out, errOut, code := run("send", "profile/p1", "name", `{"name":"Ada Lovelace"}`, "--idempotency-key", "n1"); code != 0 {
			return fmt.Errorf("send: exit %d %s %s", code, out, errOut)
		}
		return nil
	})
	must("send", "profile/p2", "name", `{"name":"panic now"}`)

	must("actor", "deploy", v2, "--type", "profile", "--revision", "2")
	must("actor", "activate", "--type", "profile", "--revision", "2")
	// "split" is revision 2's verb: the gateway takes it once 2 is active.
	testkit.Poll{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "revision 2 takes split", func() error {
		if out, errOut, code := run("send", "profile/p1", "split", `{"last":"Byron"}`, "--idempotency-key", "s1"); code != 0 {
			return fmt.Errorf("send split: exit %d %s %s", code, out, errOut)
		}
		return nil
	})
	if out := must("get", "profile/p1"); !strings.Contains(out, `{"first":"Ada","last":"Byron"}`) {
		t.Fatalf("get after revision 2: %s", out)
	}

	type shown struct {
		Type          string          `json:"type"`
		SchemaVersion uint32          `json:"schema_version"`
		Payload       json.RawMessage `json:"payload"`
	}
	want := []string{`{"first":"Ada","last":"Lovelace"}`, `{"first":"Ada","last":"Byron"}`}
	check := func(what string, evs []shown) {
		t.Helper()
		if len(evs) != len(want) {
			t.Fatalf("%s: %d events %+v, want %d", what, len(evs), evs, len(want))
		}
		for i, e := range evs {
			var payload bytes.Buffer
			_ = json.Compact(&payload, e.Payload)
			if e.Type != "evt.profile.named" || e.SchemaVersion != 2 || payload.String() != want[i] {
				t.Errorf("%s[%d] = %s v%d %s; want evt.profile.named v2 %s", what, i, e.Type, e.SchemaVersion, payload.String(), want[i])
			}
		}
	}
	h := decode[struct {
		Records []struct {
			Event shown `json:"event"`
		} `json:"records"`
	}](t, must("history", "profile/p1", "-o", "json"))
	var evs []shown
	for _, r := range h.Records {
		evs = append(evs, r.Event)
	}
	check("history", evs)
	evs = nil
	for l := range strings.SplitSeq(strings.TrimSpace(must("watch", "--entity", "profile/p1", "--from-beginning", "--count", "2", "-o", "json", "--timeout", "60s")), "\n") {
		evs = append(evs, decode[struct {
			Event shown `json:"event"`
		}](t, l).Event)
	}
	check("watch", evs)
	if out := must("replay", "--entity", "profile/p1"); !strings.Contains(out, "identical") {
		t.Fatalf("replay: %s", out)
	}

	if out, errOut, code := run("history", "profile/p2"); code == 0 || !strings.Contains(errOut, "Internal") ||
		!strings.Contains(errOut, "upcaster cannot read panic now") {
		t.Fatalf("history of an event the upcaster traps on: exit %d %s %s", code, out, errOut)
	}
	if out := must("history", "profile/p1"); strings.Count(out, "evt.profile.named") != 2 {
		t.Fatalf("history after the trap: %s", out)
	}
}
