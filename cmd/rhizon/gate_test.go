package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/replay"
)

// rewriteGate re-records the replay gate's history:
//
//	go test ./cmd/rhizon -run TestGate -rewrite
//
// Do it only on purpose, when a change of behaviour is meant: the diff of
// testdata/gate is then what reviewers read.
var rewriteGate = flag.Bool("rewrite", false, "re-record testdata/gate/history.rhzx from a rhizon dev node")

const gateFile = "testdata/gate/history.rhzx"

// The replay gate: a recorded history of a fixed, varied workload (every
// built-in actor, a lock expiring through its timer, sagas that complete and
// that compensate, conflicts, invalid commands, business rejections and a
// violation) replays with the current code with no byte of difference in
// events, results or state hashes. A change of behaviour fails here until
// the recording is regenerated with -rewrite.
func TestGate_RecordedHistoryReplaysIdentically(t *testing.T) {
	if *rewriteGate {
		recordGate(t)
	}
	dir := importGate(t)
	shards, err := replay.ShardDirs(dir)
	if err != nil || len(shards) == 0 {
		t.Fatalf("shards of the gate's history: %v %v", shards, err)
	}
	commands := 0
	for _, s := range shards {
		rep, err := replay.DataDir(dir, replay.Options{Shard: s, Registry: builtin.Registry()})
		if err != nil {
			t.Fatalf("replay of shard %d: %v", s, err)
		}
		if !rep.Identical {
			t.Errorf("shard %d of %s no longer replays identically: the code changed behaviour. "+
				"If that is meant, re-record with `go test ./cmd/rhizon -run TestGate -rewrite` and review the diff.\n"+
				"first divergence: %+v\nrecorded hash %s, replayed %s", s, gateFile, rep.Divergence, rep.RecordedHash, rep.ReplayedHash)
		}
		commands += rep.Compared
	}
	// The workload below sends 40 commands and its sagas add their Sends:
	// a history that lost most of them would not be a gate.
	if commands < 40 {
		t.Errorf("the gate compared %d commands, want at least the 40 the workload sends", commands)
	}
}

// A planted change in an actor's Decide (the counter records adds twice) fails the
// gate, naming the first differing position.
func TestGate_PlantedChangeNamesTheFirstDivergence(t *testing.T) {
	dir := importGate(t)
	shards, err := replay.ShardDirs(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg := plantedRegistry(t)
	diverged := 0
	for _, s := range shards {
		rep, err := replay.DataDir(dir, replay.Options{Shard: s, Registry: reg})
		if err != nil {
			t.Fatalf("replay of shard %d: %v", s, err)
		}
		if rep.Identical {
			continue
		}
		diverged++
		d := rep.Divergence
		if d == nil || d.Index == 0 || !strings.Contains(d.Address, "/counter/") || (d.What != "result" && d.What != "events") {
			t.Errorf("shard %d: divergence %+v, want the first counter command's position, result or events", s, d)
		}
	}
	if diverged == 0 {
		t.Fatal("a doubling counter replayed the gate identically: the gate checks nothing")
	}
}

func importGate(t *testing.T) string {
	t.Helper()
	f, err := os.Open(gateFile)
	if err != nil {
		t.Fatalf("%v (record it with `go test ./cmd/rhizon -run TestGate -rewrite`)", err)
	}
	defer f.Close()
	dir := filepath.Join(t.TempDir(), "gate")
	if _, err := replay.Import(f, dir); err != nil {
		t.Fatalf("import %s: %v", gateFile, err)
	}
	return dir
}

// plantedRegistry is the built-in registry with a counter that records
// each add twice.
func plantedRegistry(t *testing.T) *actor.Registry {
	t.Helper()
	var bs []actor.Behavior
	for _, typ := range builtin.Registry().Types() {
		b, _ := builtin.Registry().Lookup(typ)
		if typ == "counter" {
			b = doublingCounter{b}
		}
		bs = append(bs, b)
	}
	reg, err := actor.NewRegistry(bs...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

type doublingCounter struct{ actor.Behavior }

func (d doublingCounter) Decide(ctx *actor.Context, state []byte, c *actor.Command) ([]actor.NewEvent, error) {
	evs, err := d.Behavior.Decide(ctx, state, c)
	if err == nil && len(evs) == 1 {
		evs = append(evs, evs[0]) // the planted bug: one add recorded twice
	}
	return evs, err
}

// recordGate runs the gate's workload on a real `rhizon dev` node (4 shards,
// embedded NATS, so Sends and timers run as in production), stops it and
// exports its history to testdata/gate.
func recordGate(t *testing.T) {
	dir := t.TempDir()
	p := startDev(t, dir)
	send := func(wantExit int, args ...string) {
		t.Helper()
		if out, code := p.rhizon(t, append([]string{"send"}, args...)...); code != wantExit {
			t.Fatalf("send %v: exit %d, want %d\n%s", args, code, wantExit, out)
		}
	}
	const rejected, violation = exitRejected, exitRejected
	for i := range 6 {
		send(0, fmt.Sprint("counter/c", i%3), "add", fmt.Sprintf(`{"amount":%d}`, i+1))
	}
	send(rejected, "counter/c0", "add", `{"amount":1}`, "--expected-version", "1") // a conflict
	send(exitError, "counter/c1", "add", `{"amount":0}`)                           // invalid
	send(rejected, "counter/c2", "add", `{"amount":9223372036854775807}`)          // overflow
	send(0, "account/a1", "open", `{"currency":"EUR"}`)
	send(0, "account/a1", "deposit", `{"amount":500}`)
	send(0, "account/a1", "withdraw", `{"amount":200}`)
	send(rejected, "account/a1", "withdraw", `{"amount":1000}`) // insufficient_funds
	send(rejected, "account/a1", "open", `{}`)                  // already_open
	send(0, "kv/d1", "create", `{"doc":{"b":2,"a":1}}`)
	send(0, "kv/d1", "patch", `{"patch":{"b":null,"c":[1,2]}}`)
	send(0, "kv/d1", "update", `{"doc":{"z":true}}`)
	send(0, "kv/d1", "get", `{}`)
	send(rejected, "kv/d1", "create", `{"doc":{}}`) // exists
	send(0, "kv/d1", "delete", `{}`)
	send(0, "kv/d1", "delete", `{}`) // idempotent: accepted, no event
	send(rejected, "kv/d2", "update", `{"doc":{}}`)
	send(0, "lock/l1", "acquire", `{"owner":"o1","ttl_ms":300}`)
	send(rejected, "lock/l1", "acquire", `{"owner":"o2","ttl_ms":300}`) // held
	send(0, "lock/l2", "acquire", `{"resource_id":"l2","owner_id":"o1"}`)
	send(0, "lock/l2", "release", `{"owner":"o1"}`)
	send(0, "lock/l2", "release", `{"owner":"o1"}`) // a free lock: accepted
	send(0, "inventory/wh1", "stock", `{"sku":"apple","qty":10}`)
	send(0, "payment/p1", "deposit", `{"amount":1000}`)
	send(0, "order/o1", "place", `{"sku":"apple","qty":2,"amount":500,"inventory":"wh1","payment":"p1"}`)  // completes
	send(0, "order/o2", "place", `{"sku":"apple","qty":1,"amount":5000,"inventory":"wh1","payment":"p1"}`) // compensates
	send(0, "order/o3", "place", `{"sku":"apple","qty":99,"amount":1,"inventory":"wh1","payment":"p1"}`)   // no stock
	send(violation, "counter/c0", "add", `{"amount":1}`, "--tenant", "someone-else")
	for i := range 8 {
		send(0, fmt.Sprint("counter/d", i), "add", `{"amount":1}`, "--idempotency-key", fmt.Sprint("k", i))
	}
	send(0, "counter/d0", "add", `{"amount":1}`, "--idempotency-key", "k0") // a duplicate
	// Wait for the sagas' ends and the lock's expiry (a timer entry).
	want := map[string]string{"order/o1": `"completed"`, "order/o2": `"cancelled"`, "order/o3": `"failed"`}
	for addr, status := range want {
		testkit.Poll{Timeout: 60 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, addr+" ends", func() error {
			out, _ := p.rhizon(t, "get", addr)
			if !strings.Contains(out, status) {
				return fmt.Errorf("%s: %s", addr, out)
			}
			return nil
		})
	}
	testkit.Poll{Timeout: 30 * time.Second, Every: 200 * time.Millisecond}.EventuallyNil(t, "lock/l1 expires", func() error {
		out, _ := p.rhizon(t, "history", "lock/l1")
		if !strings.Contains(out, "expired") {
			return fmt.Errorf("history: %s", out)
		}
		return nil
	})
	p.kill()
	if err := os.MkdirAll(filepath.Dir(gateFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, code := p.rhizon(t, "export", "--data-dir", dir, "-o", gateFile); code != 0 {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	t.Logf("re-recorded %s: review its diff", gateFile)
}
