package builtin

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/rhizon/rhizon/actor"
)

// tb is what the harness needs of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

// entity mimics what the engine does for one entity: validate the command as
// the gateway would, Decide against the current state, then Evolve each event.
type entity struct {
	b       actor.Behavior
	addr    actor.Address
	state   []byte
	version uint64
	n       int
	log     []actor.Event // every event applied, for replay checks
	// sender, when set, names the actor a command comes from (nil: a user).
	sender func(verb, payload string) *actor.Address
}

func newEntity(b actor.Behavior) *entity {
	return &entity{b: b, addr: actor.Address{Tenant: "t", Workspace: "w", ActorType: b.Type(), EntityID: "e1"}}
}

// outcome is what one command produced.
type outcome struct {
	events []actor.NewEvent
	timers []actor.TimerOp
	sends  []actor.Send
	reply  []byte
	err    error
}

func (e *entity) command(verb, payload string, principal actor.PrincipalType) *actor.Command {
	e.n++
	var p []byte
	if payload != "" {
		p = []byte(payload)
	}
	c := &actor.Command{
		ID:             fmt.Sprintf("c%d", e.n),
		Type:           actor.CommandType(e.b.Type(), verb),
		Address:        e.addr,
		Payload:        p,
		IdempotencyKey: fmt.Sprintf("k%d", e.n),
		Security: actor.Security{
			Principal: actor.Principal{ID: "u", Type: principal},
			Scopes:    []actor.Scope{{Tenant: "t", Workspace: "w"}},
		},
	}
	if e.sender != nil {
		if from := e.sender(verb, payload); from != nil {
			// As the engine sends it: the actor's principal, a send key.
			from.Tenant, from.Workspace = e.addr.Tenant, e.addr.Workspace
			c.Security.Principal = actor.SenderPrincipal(*from)
			c.IdempotencyKey = actor.SendKeyPrefix + c.IdempotencyKey
		}
	}
	return c
}

// exec runs one command at logical time now (Unix ms) from a user.
func (e *entity) exec(t tb, now int64, verb, payload string) outcome {
	return e.execAs(t, now, verb, payload, actor.PrincipalUser)
}

func (e *entity) execAs(t tb, now int64, verb, payload string, principal actor.PrincipalType) outcome {
	t.Helper()
	cmd := e.command(verb, payload, principal)
	// The engine makes timer commands itself; Validate refuses them to clients.
	if err := cmd.Validate(); err != nil && verb != actor.TimerVerb {
		t.Fatalf("%s %s: the gateway would refuse the command itself: %v", cmd.Type, short(payload), err)
	}
	var verr error
	if v, ok := e.b.(actor.Validator); ok {
		verr = v.Validate(cmd)
	}
	before := bytes.Clone(e.state)
	ctx := actor.NewContext(e.addr, cmd.Security, now, uint64(e.n)*7919, e.version)
	events, err := e.b.Decide(ctx, e.state, cmd)
	if !bytes.Equal(before, e.state) {
		t.Fatalf("%s: Decide modified the state bytes it was given", cmd.Type)
	}
	// Validate is stateless; whatever it refuses, Decide must refuse the same way.
	if verr != nil && (err == nil || err.Error() != verr.Error()) {
		t.Fatalf("%s %s: Validate said %v but Decide said %v", cmd.Type, short(payload), verr, err)
	}
	if r, ok := actor.AsRejection(err); ok && r.Reason == actor.ReasonInvalid && verr == nil {
		t.Fatalf("%s %s: Decide found the payload invalid (%v) but Validate passed it", cmd.Type, short(payload), err)
	}
	sends, timers, reply := ctx.Effects()
	out := outcome{events: events, timers: timers, sends: sends, reply: reply, err: err}
	if err != nil {
		if len(events) != 0 {
			t.Fatalf("%s: rejected with %d events", cmd.Type, len(events))
		}
		return out
	}
	if len(events) > actor.MaxEventsPerCommand || len(timers) > actor.MaxTimersPerCommand || len(sends) > actor.MaxSendsPerCommand {
		t.Fatalf("%s: too many effects: %d events, %d timers, %d sends", cmd.Type, len(events), len(timers), len(sends))
	}
	for i, ne := range events {
		e.version++
		ev := actor.Event{
			ID:        fmt.Sprintf("%s-%d", cmd.ID, i),
			Type:      actor.EventType(e.b.Type(), ne.Name),
			Address:   e.addr,
			Version:   e.version,
			Payload:   ne.Payload,
			At:        now,
			CommandID: cmd.ID,
			Principal: cmd.Security.Principal,
			Ordinal:   uint32(i),
		}
		next, err := e.b.Evolve(e.state, &ev)
		if err != nil {
			t.Fatalf("%s: Evolve(%s %s): %v", cmd.Type, ev.Type, short(string(ev.Payload)), err)
		}
		if len(next) > actor.MaxStateBytes {
			t.Fatalf("%s: state is %d bytes, over actor.MaxStateBytes", cmd.Type, len(next))
		}
		e.state = next
		e.log = append(e.log, ev)
	}
	return out
}

// replay folds the whole event log into a fresh state.
func (e *entity) replay(t tb) []byte {
	t.Helper()
	var s []byte
	for i := range e.log {
		var err error
		if s, err = e.b.Evolve(s, &e.log[i]); err != nil {
			t.Fatalf("replay %s: %v", e.log[i].Type, err)
		}
	}
	return s
}

// step is one command of a table test and what it must produce.
type step struct {
	now     int64
	verb    string
	payload string
	system  bool // send as the system principal (timers)

	code   string   // "" when accepted; else the rejection code ("invalid" for Invalid)
	msg    string   // when rejected: a substring of the message
	events []string // when accepted: "name payload" per event, exactly
	state  string   // if set: the exact state after the step
	reply  string   // the exact reply ("" for none)
	timers []string // if non-nil: "set name at" / "cancel name" per timer op
}

type tcase struct {
	name  string
	steps []step
}

func runCases(t *testing.T, mk func() actor.Behavior, cases []tcase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEntity(mk())
			for i, st := range tc.steps {
				e.check(t, i, st)
			}
			if got := e.replay(t); !bytes.Equal(got, e.state) && len(e.log) > 0 {
				t.Errorf("replaying the log gives %s, want %s", short(string(got)), short(string(e.state)))
			}
		})
	}
}

func (e *entity) check(t *testing.T, i int, st step) {
	t.Helper()
	p := actor.PrincipalUser
	if st.system {
		p = actor.PrincipalSystem
	}
	out := e.execAs(t, st.now, st.verb, st.payload, p)
	where := fmt.Sprintf("step %d (%s %s)", i, st.verb, short(st.payload))
	if st.code != "" {
		r, ok := actor.AsRejection(out.err)
		if !ok {
			t.Fatalf("%s: want rejection %q, got err=%v events=%s", where, st.code, out.err, short(fmtEvents(out.events)))
		}
		if r.Code != st.code {
			t.Fatalf("%s: want code %q, got %q (%s)", where, st.code, r.Code, r.Message)
		}
		wantReason := actor.ReasonBusiness
		if st.code == "invalid" {
			wantReason = actor.ReasonInvalid
		}
		if r.Reason != wantReason {
			t.Errorf("%s: reason %v, want %v", where, r.Reason, wantReason)
		}
		if !strings.Contains(r.Message, st.msg) {
			t.Errorf("%s: message %q does not contain %q", where, r.Message, st.msg)
		}
		if st.msg == "" {
			t.Errorf("%s: message is %q; give the case a msg to check", where, r.Message)
		}
	} else if out.err != nil {
		t.Fatalf("%s: unexpected error %v", where, out.err)
	}
	if got, want := fmtEvents(out.events), strings.Join(st.events, "\n"); got != want {
		t.Errorf("%s: events\n got: %s\nwant: %s", where, short(got), short(want))
	}
	if st.state != "" && string(e.state) != st.state {
		t.Errorf("%s: state\n got: %s\nwant: %s", where, short(string(e.state)), short(st.state))
	}
	if string(out.reply) != st.reply {
		t.Errorf("%s: reply %q, want %q", where, short(string(out.reply)), short(st.reply))
	}
	if st.timers != nil {
		if got, want := fmtTimers(out.timers), strings.Join(st.timers, "\n"); got != want {
			t.Errorf("%s: timers\n got: %s\nwant: %s", where, got, want)
		}
	} else if st.code == "" && len(out.timers) != 0 && e.b.Type() != LockType {
		t.Errorf("%s: unexpected timers %s", where, fmtTimers(out.timers))
	}
	if len(out.sends) != 0 {
		t.Errorf("%s: built-in actors send nothing, got %v", where, out.sends)
	}
}

func fmtEvents(evs []actor.NewEvent) string {
	s := make([]string, len(evs))
	for i, ev := range evs {
		s[i] = ev.Name + " " + string(ev.Payload)
	}
	return strings.Join(s, "\n")
}

func fmtTimers(ops []actor.TimerOp) string {
	s := make([]string, len(ops))
	for i, op := range ops {
		if op.Cancel {
			s[i] = "cancel " + op.Name
		} else {
			s[i] = fmt.Sprintf("set %s %d", op.Name, op.At)
			if len(op.Payload) != 0 {
				s[i] += " " + string(op.Payload)
			}
		}
	}
	return strings.Join(s, "\n")
}

// short abbreviates s for failure messages.
func short(s string) string {
	if len(s) <= 300 {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)...%s", s[:150], len(s), s[len(s)-100:])
}
