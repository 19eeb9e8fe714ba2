package engine_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
	"pgregory.net/rapid"
)

// A client may not submit the engine-only timer verb, whatever path it took:
// the engine itself refuses it.
func TestSecurity_ClientTimerVerbRefused(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	l := addr("lock", "l1")
	acq := r.apply(engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd(l, "acquire", "k1", map[string]any{"owner": "w1", "ttl_ms": 1000}),
	}})
	if acq[0].Status != actor.StatusAccepted {
		t.Fatalf("acquire: %+v", acq[0])
	}
	forged := cmd(l, actor.TimerVerb, "k2", actor.TimerFired{Name: builtin.LockTimer, At: 2000})
	res := r.apply(engine.Entry{Index: 2, At: 2500, Commands: []actor.Command{forged}})
	if res[0].Reason != actor.ReasonInvalid || !strings.Contains(res[0].Message, "timer fires") {
		t.Fatalf("client timer command: %+v (want invalid)", res[0])
	}
}

// A client key in the engine's namespaces is refused, so a client cannot
// store a result under a timer's key first and stop the timer from firing.
func TestSecurity_ClientCannotTakeTimerKey(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	l := addr("lock", "l1")
	r.apply(engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd(l, "acquire", "k1", map[string]any{"owner": "w1", "ttl_ms": 1000}),
	}})
	// The timer fires at 2000 under "timer/expiry/2000"; take that key first
	// (and a send key) with commands that would otherwise be accepted.
	for i, key := range []string{"timer/expiry/2000", "send/abc"} {
		c := cmd(l, "refresh", key, map[string]any{"owner": "w1", "ttl_ms": 500})
		c.ID = "take" + string(rune('0'+i))
		res := r.apply(engine.Entry{Index: uint64(2 + i), At: 1500, Commands: []actor.Command{c}})
		if res[0].Reason != actor.ReasonInvalid || !strings.Contains(res[0].Message, "engine keeps") {
			t.Fatalf("client key %q: %+v (want invalid)", key, res[0])
		}
	}
	out, err := r.eng.Apply(&engine.Entry{Index: 4, At: 2001})
	if err != nil {
		t.Fatal(err)
	}
	if out.TimersFired != 1 {
		t.Fatalf("timers fired at 2001: %d, want 1", out.TimersFired)
	}
	var st builtin.LockState
	ent, _ := r.store.Entity(l)
	if err := json.Unmarshal(ent.State, &st); err != nil {
		t.Fatal(err)
	}
	if st.Owner != "" {
		t.Fatalf("lock still held after its timer: %+v", st)
	}
}

// Control characters are refused in every id and trace field.
func TestSecurity_ControlCharactersRefused(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1 := addr("counter", "c1")
	mk := map[string]func(c *actor.Command){
		"idempotency_key": func(c *actor.Command) { c.IdempotencyKey = "k\x1b[31m" },
		"command id":      func(c *actor.Command) { c.ID = "id\n" },
		"causation_id":    func(c *actor.Command) { c.CausationID = "c\x00" },
		"correlation_id":  func(c *actor.Command) { c.CorrelationID = "c\r" },
		"traceparent":     func(c *actor.Command) { c.TraceParent = "00-\x7f" },
		"tracestate":      func(c *actor.Command) { c.TraceState = "a=\u0085" },
		"entity_id":       func(c *actor.Command) { c.Address.EntityID = "e\t" },
		"tenant":          func(c *actor.Command) { c.Address.Tenant = "a\x01" },
	}
	idx := uint64(0)
	for field, f := range mk { //rhizon:deterministic test
		c := cmd(c1, "add", "k-"+field, map[string]int{"amount": 1})
		f(&c)
		idx++
		res := r.apply(engine.Entry{Index: idx, At: 10, Commands: []actor.Command{c}})
		if res[0].Reason != actor.ReasonInvalid || !strings.Contains(res[0].Message, field) {
			t.Errorf("%s with a control character: %+v (want invalid naming the field)", field, res[0])
		}
	}
	if ent, _ := r.store.Entity(c1); ent.Version != 0 {
		t.Fatalf("a refused command changed state: %+v", ent)
	}
}

// Credentials cannot name an actor's send principal.
func TestSecurity_SenderPrincipalReserved(t *testing.T) {
	p := actor.SenderPrincipal(addr("payment", "p1"))
	if err := p.Validate(); err == nil {
		t.Fatalf("principal %q validated as a credential's", p.ID)
	}
	r := newReplica(t, builtin.Registry())
	c := cmd(addr("counter", "c1"), "add", "k1", map[string]int{"amount": 1})
	c.Security.Principal = p
	res := r.apply(engine.Entry{Index: 1, At: 10, Commands: []actor.Command{c}})
	if res[0].Reason != actor.ReasonInvalid {
		t.Fatalf("actor principal with a client key: %+v", res[0])
	}
}

// The violations audit stream is engine state (coalescing, the per-window
// cap, eviction of old records), so two replicas (Badger and memstore) applying the same entries
// of out-of-scope commands, mixed with in-scope ones, must give the same
// results and the same state hash after every entry.
func TestPromise_Determinism_ViolationAuditOnTwoReplicas(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		a, b := newReplica(t, builtin.Registry()), newMemReplica(t, builtin.Registry())
		defer a.close()
		at := int64(1_000_000)
		for idx := uint64(1); idx <= uint64(rapid.IntRange(1, 12).Draw(rt, "entries")); idx++ {
			// Steps of up to two windows: coalescing, new windows and eviction.
			at += rapid.Int64Range(0, 2*engine.AuditWindowMs).Draw(rt, "dt")
			ent := engine.Entry{Index: idx, At: at}
			for range rapid.IntRange(0, 40).Draw(rt, "batch") {
				c := cmd(addr("counter", fmt.Sprintf("c%d", rapid.IntRange(0, 2).Draw(rt, "entity"))), "add",
					fmt.Sprintf("k%d", rapid.IntRange(0, 30).Draw(rt, "key")), map[string]int{"amount": 1})
				if rapid.IntRange(0, 3).Draw(rt, "evil") > 0 {
					c.Security = userB
				}
				ent.Commands = append(ent.Commands, c)
			}
			ra, rb := a.apply(ent), b.apply(ent)
			ea, eb := encodeResults(t, ra), encodeResults(t, rb)
			for i := range ea {
				if !bytes.Equal(ea[i], eb[i]) {
					rt.Fatalf("entry %d command %d: replicas disagree:\n%+v\n%+v", idx, i, ra[i], rb[i])
				}
			}
			if a.eng.Meta() != b.eng.Meta() {
				rt.Fatalf("entry %d: state hashes differ", idx)
			}
		}
	})
}
