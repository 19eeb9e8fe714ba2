package engine_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/storage"
)

// model is a plain-Go description of what the built-in actors and the
// engine's checks must do, written without the engine's code paths.
type model struct {
	ents    map[string]*modelEntity
	results map[string]outcome // (address, idempotency key) -> first outcome
}

type modelEntity struct {
	version  uint64
	value    int64 // counter
	open     bool  // account
	balance  int64
	exists   bool // kv
	owner    string
	expires  int64
	lease    uint64
	timerAt  int64 // pending lock expiry timer (0 = none)
	hasTimer bool
}

type outcome struct {
	status  actor.Status
	reason  actor.Reason
	code    string
	version uint64
}

func (m *model) ent(a actor.Address) *modelEntity {
	e, ok := m.ents[a.String()]
	if !ok {
		e = &modelEntity{}
		m.ents[a.String()] = e
	}
	return e
}

// fireTimers expires every lock whose timer is due at the entry's time.
func (m *model) fireTimers(at int64, locks []actor.Address) {
	for _, a := range locks {
		e := m.ent(a)
		if e.hasTimer && e.timerAt <= at {
			e.hasTimer = false
			if e.owner != "" && e.expires <= at {
				e.owner = ""
				e.version++
			}
		}
	}
}

type modelCmd struct {
	cmd    actor.Command
	amount int64
	owner  string
	ttl    int64
}

func (m *model) apply(at int64, c modelCmd) outcome {
	key := c.cmd.Address.String() + "|" + c.cmd.IdempotencyKey
	if o, ok := m.results[key]; ok {
		return o
	}
	e := m.ent(c.cmd.Address)
	rej := func(code string) outcome {
		return outcome{status: actor.StatusRejected, reason: actor.ReasonBusiness, code: code, version: e.version}
	}
	var o outcome
	switch {
	case c.cmd.ExpectedVersion != nil && *c.cmd.ExpectedVersion != e.version:
		o = outcome{status: actor.StatusRejected, reason: actor.ReasonConflict, code: "version_conflict", version: e.version}
	default:
		o = m.decide(at, c, e, rej)
	}
	m.results[key] = o
	return o
}

func (m *model) decide(at int64, c modelCmd, e *modelEntity, rej func(string) outcome) outcome {
	ok := func() outcome { e.version++; return outcome{status: actor.StatusAccepted, version: e.version} }
	switch c.cmd.Address.ActorType + "." + c.cmd.Verb() {
	case "counter.add":
		e.value += c.amount
		return ok()
	case "account.open":
		if e.open {
			return rej("already_open")
		}
		e.open = true
		return ok()
	case "account.deposit":
		if !e.open {
			return rej("not_open")
		}
		e.balance += c.amount
		return ok()
	case "account.withdraw":
		if !e.open {
			return rej("not_open")
		}
		if e.balance < c.amount {
			return rej("insufficient_funds")
		}
		e.balance -= c.amount
		return ok()
	case "kv.create":
		if e.exists {
			return rej("exists")
		}
		e.exists = true
		return ok()
	case "kv.update":
		if !e.exists {
			return rej("not_found")
		}
		return ok()
	case "kv.delete":
		if !e.exists { // idempotent: accepted, nothing changes
			return outcome{status: actor.StatusAccepted, version: e.version}
		}
		e.exists = false
		return ok()
	case "kv.get":
		if !e.exists {
			return rej("not_found")
		}
		return outcome{status: actor.StatusAccepted, version: e.version}
	case "lock.acquire":
		held := e.owner != "" && at < e.expires
		if held && e.owner != c.owner {
			return rej("held")
		}
		if !held {
			e.lease++
		}
		e.owner, e.expires, e.timerAt, e.hasTimer = c.owner, at+c.ttl, at+c.ttl, true
		return ok()
	case "lock.release":
		if e.owner == "" || at >= e.expires { // free: idempotent, nothing changes
			return outcome{status: actor.StatusAccepted, version: e.version}
		}
		if e.owner != c.owner {
			return rej("not_holder")
		}
		e.owner, e.hasTimer = "", false
		return ok()
	case "lock.refresh":
		if e.owner != c.owner || at >= e.expires {
			return rej("not_holder")
		}
		e.expires, e.timerAt, e.hasTimer = at+c.ttl, at+c.ttl, true
		return ok()
	}
	panic("model: unknown command " + c.cmd.Type)
}

var modelVerbs = map[string][]string{
	"counter": {"add"},
	"account": {"open", "deposit", "withdraw"},
	"kv":      {"create", "update", "delete", "get"},
	"lock":    {"acquire", "release", "refresh"},
}

var modelTypes = []string{"account", "counter", "kv", "lock"}

func genCommand(t *rapid.T, n int, sent []modelCmd) modelCmd {
	if len(sent) > 0 && rapid.IntRange(0, 9).Draw(t, "resend") == 0 {
		return sent[rapid.IntRange(0, len(sent)-1).Draw(t, "which")]
	}
	typ := rapid.SampledFrom(modelTypes).Draw(t, "type")
	verb := rapid.SampledFrom(modelVerbs[typ]).Draw(t, "verb")
	a := addr(typ, fmt.Sprintf("e%d", rapid.IntRange(0, 2).Draw(t, "entity")))
	mc := modelCmd{}
	var payload any
	switch typ {
	case "counter", "account":
		mc.amount = rapid.Int64Range(1, 100).Draw(t, "amount")
		payload = map[string]int64{"amount": mc.amount}
		if verb == "open" {
			payload = map[string]string{}
		}
	case "kv":
		payload = map[string]any{"doc": map[string]int{"n": n}}
		if verb == "delete" || verb == "get" {
			payload = map[string]any{}
		}
	case "lock":
		mc.owner = rapid.SampledFrom([]string{"w1", "w2"}).Draw(t, "owner")
		mc.ttl = rapid.Int64Range(1, 400).Draw(t, "ttl")
		payload = map[string]any{"owner": mc.owner, "ttl_ms": mc.ttl}
		if rapid.IntRange(0, 3).Draw(t, "default ttl") == 0 {
			mc.ttl, payload = builtin.DefaultLockTTL, map[string]any{"owner": mc.owner}
		}
		if verb == "release" {
			payload = map[string]any{"owner": mc.owner}
		}
	}
	mc.cmd = cmd(a, verb, fmt.Sprintf("k%d", n), payload)
	if rapid.IntRange(0, 3).Draw(t, "occ") == 0 {
		mc.cmd = withVersion(mc.cmd, uint64(rapid.IntRange(0, 4).Draw(t, "expected")))
	}
	return mc
}

// TestPromise_Determinism_EngineMatchesModelOnTwoReplicas applies random
// command sequences over every built-in actor to two engines, one over Badger
// and one over memstore, and checks (1) every result against the model, (2)
// that both replicas return byte-identical results and reach the same state
// hash after every entry and (3) that they hold the same history.
func TestPromise_Determinism_EngineMatchesModelOnTwoReplicas(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		a, b := newReplica(t, builtin.Registry()), newMemReplica(t, builtin.Registry())
		defer a.close()
		m := &model{ents: map[string]*modelEntity{}, results: map[string]outcome{}}
		var locks []actor.Address
		for i := range 3 {
			locks = append(locks, addr("lock", fmt.Sprintf("e%d", i)))
		}
		var sent []modelCmd
		at := int64(1_000_000)
		n := 0
		entries := rapid.IntRange(1, 25).Draw(rt, "entries")
		for idx := uint64(1); idx <= uint64(entries); idx++ {
			at += rapid.Int64Range(0, 300).Draw(rt, "dt")
			var cmds []modelCmd
			for range rapid.IntRange(0, 6).Draw(rt, "batch") {
				n++
				cmds = append(cmds, genCommand(rt, n, sent))
			}
			sent = append(sent, cmds...)
			ent := engine.Entry{Index: idx, At: at}
			for _, c := range cmds {
				ent.Commands = append(ent.Commands, c.cmd)
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
			for _, c := range cmds {
				ha, hb := a.history(c.cmd.Address, true), b.history(c.cmd.Address, true)
				if !slices.EqualFunc(ha, hb, func(x, y storage.HistoryRecord) bool {
					return x.Pos == y.Pos && x.Kind == y.Kind && bytes.Equal(x.Data, y.Data)
				}) {
					rt.Fatalf("entry %d: history of %s differs:\nbadger %v\nmemory %v", idx, c.cmd.Address, ha, hb)
				}
			}
			m.fireTimers(at, locks)
			for i, c := range cmds {
				want := m.apply(at, c)
				got := ra[i]
				if got.Status != want.status || got.Reason != want.reason || got.Version != want.version ||
					(want.code != "" && got.Code != want.code) {
					rt.Fatalf("entry %d at %d, %s %s key %s: engine %v/%v/%q v%d, model %v/%v/%q v%d (%s)",
						idx, at, c.cmd.Address, c.cmd.Type, c.cmd.IdempotencyKey,
						got.Status, got.Reason, got.Code, got.Version, want.status, want.reason, want.code, want.version, got.Message)
				}
			}
		}
	})
}
