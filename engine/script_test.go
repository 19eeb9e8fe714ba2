package engine_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
)

// TestScripts runs the specifications in testdata/script/: commands in,
// results, events, state, history and the state hash out. Each script runs
// on an engine over memstore and one over Badger, which must agree on every
// result and hash. The hashes make the scripts a replay gate: a change of
// any byte the engine stores shows as a diff. After a deliberate change:
//
//	go test ./engine -run TestScripts -rewrite
//
// Directives (arguments as key=value):
//
//	apply [at=MS]   one log entry of the commands below, one per line:
//	                <type>/<id> <verb> <key> [json] [expect=N] [as=bob] [cid=ID] [corr=ID]
//	                (as=bob: a user of tenant b, outside tenant a's scope)
//	tick at=MS      an empty entry: due timers fire
//	deliver         the actors' Sends not yet delivered, as one entry
//	state <type>/<id>, history <type>/<id> [rejections], audit <principal>, hash
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/script", func(t *testing.T, path string) {
		s := &script{t: t,
			mem:  newMemReplica(t, builtin.Registry()),
			disk: newReplica(t, builtin.Registry()),
			at:   1_000_000,
		}
		datadriven.RunTest(t, path, s.run)
	})
}

type script struct {
	t         *testing.T
	mem, disk *replica
	index     uint64
	at        int64
	delivered engine.Position // outbox rows up to here were delivered
	fired     int             // timers the last entry fired
}

func (s *script) run(t *testing.T, d *datadriven.TestData) string {
	for _, a := range d.CmdArgs {
		if a.Key == "at" {
			at, err := strconv.ParseInt(a.Vals[0], 10, 64)
			if err != nil {
				d.Fatalf(t, "at: %v", err)
			}
			s.at = at
		}
	}
	switch d.Cmd {
	case "apply":
		var cmds []actor.Command
		for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				cmds = append(cmds, parseCommand(t, d, line))
			}
		}
		return s.apply(cmds, nil)
	case "tick":
		return s.apply(nil, nil)
	case "deliver":
		rows, err := s.disk.store.Outbox(s.delivered, 10_000)
		if err != nil {
			t.Fatal(err)
		}
		var cmds []actor.Command
		for _, r := range rows {
			s.delivered = r.Pos
			if r.Data[0] != engine.OutboxCommand {
				continue
			}
			var c recordv1.Command
			if err := proto.Unmarshal(r.Data[1:], &c); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, c.ToActor())
		}
		if len(cmds) == 0 {
			return "nothing to deliver\n"
		}
		return s.apply(cmds, func(c *actor.Command) string { return c.Address.ActorType + "/" + c.Address.EntityID + " " + c.Verb() })
	case "state":
		a := target(t, d, d.CmdArgs[0].Key)
		e, err := s.mem.mem.Entity(a)
		if err != nil {
			t.Fatal(err)
		}
		if e.Version == 0 {
			return "none\n"
		}
		return fmt.Sprintf("v%d %s\n", e.Version, e.State)
	case "history", "audit":
		var a actor.Address
		if d.Cmd == "audit" {
			a = engine.AuditAddress(d.CmdArgs[0].Key, 7, 0)
		} else {
			a = target(t, d, d.CmdArgs[0].Key)
		}
		var b strings.Builder
		for _, r := range s.mem.history(a, d.Cmd == "audit" || d.HasArg("rejections")) {
			fmt.Fprintf(&b, "%d/%d ", r.Pos.Index, r.Pos.Ordinal)
			switch r.Kind {
			case engine.HistoryEvent:
				var e recordv1.Event
				if err := proto.Unmarshal(r.Data, &e); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s v%d %s\n", e.Type, e.Version, e.Payload)
			default:
				var rj recordv1.Rejection
				if err := proto.Unmarshal(r.Data, &rj); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "%s %s of %s by %s", rj.Type, rj.Reason, rj.CommandType, rj.GetPrincipal().GetId())
				if rj.Code != "" {
					fmt.Fprintf(&b, " code %s", rj.Code)
				}
				b.WriteString("\n")
			}
		}
		return b.String()
	case "hash":
		m := s.mem.eng.Meta()
		return fmt.Sprintf("index %d at %d hash %x\n", m.Index, m.At, m.Hash[:8])
	}
	d.Fatalf(t, "unknown directive %q", d.Cmd)
	return ""
}

// apply applies one entry on both replicas and prints its results.
func (s *script) apply(cmds []actor.Command, label func(*actor.Command) string) string {
	s.index++
	ent := engine.Entry{Index: s.index, At: s.at, Commands: cmds}
	rm, rd := s.mem.apply(ent), s.disk.apply(ent)
	s.fired = s.mem.fired
	em, ed := encodeResults(s.t, rm), encodeResults(s.t, rd)
	for i := range em {
		if string(em[i]) != string(ed[i]) {
			s.t.Fatalf("entry %d command %d: memstore and Badger disagree:\n%+v\n%+v", s.index, i, rm[i], rd[i])
		}
	}
	if s.mem.eng.Meta() != s.disk.eng.Meta() {
		s.t.Fatalf("entry %d: memstore and Badger state hashes differ", s.index)
	}
	var b strings.Builder
	for i := range rm {
		name := cmds[i].IdempotencyKey
		if label != nil {
			name = label(&cmds[i])
		}
		writeResult(&b, name, &rm[i])
	}
	if len(cmds) == 0 {
		fmt.Fprintf(&b, "entry %d at %d: %d timers fired\n", s.index, s.at, s.fired)
	}
	return b.String()
}

func writeResult(b *strings.Builder, name string, r *actor.Result) {
	if r.Status == actor.StatusAccepted {
		fmt.Fprintf(b, "%s: accepted v%d", name, r.Version)
	} else {
		fmt.Fprintf(b, "%s: rejected %s", name, r.Reason)
		if r.Code != "" {
			fmt.Fprintf(b, "/%s", r.Code)
		}
		fmt.Fprintf(b, " v%d: %s", r.Version, r.Message)
	}
	if r.Duplicate {
		b.WriteString(" (duplicate)")
	}
	if r.Replay {
		b.WriteString(" (replay)")
	}
	b.WriteString("\n")
	for _, e := range r.Events {
		fmt.Fprintf(b, "  %s v%d %s\n", e.Type, e.Version, e.Payload)
	}
	if len(r.Reply) > 0 {
		fmt.Fprintf(b, "  reply %s\n", r.Reply)
	}
}

func target(t *testing.T, d *datadriven.TestData, s string) actor.Address {
	typ, id, ok := strings.Cut(s, "/")
	if !ok {
		d.Fatalf(t, "%q: want <type>/<id>", s)
	}
	return addr(typ, id)
}

// parseCommand reads <type>/<id> <verb> <key> [json] [k=v...].
func parseCommand(t *testing.T, d *datadriven.TestData, line string) actor.Command {
	var payload []byte
	if i, j := strings.Index(line, "{"), strings.LastIndex(line, "}"); i >= 0 && j > i {
		payload, line = []byte(line[i:j+1]), line[:i]+line[j+1:]
	}
	f := strings.Fields(line)
	if len(f) < 3 {
		d.Fatalf(t, "%q: want <type>/<id> <verb> <key> [json] [expect=N] [as=bob] [cid=ID] [corr=ID]", line)
	}
	c := cmd(target(t, d, f[0]), f[1], f[2], nil)
	if payload != nil {
		c.Payload = payload
	}
	for _, a := range f[3:] {
		k, v, ok := strings.Cut(a, "=")
		switch {
		case ok && k == "expect":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				d.Fatalf(t, "%q: %v", a, err)
			}
			c = withVersion(c, n)
		case ok && k == "as" && v == "bob":
			c.Security = userB
		case ok && k == "cid":
			c.ID = v
		case ok && k == "corr":
			c.CorrelationID = v
		default:
			d.Fatalf(t, "%q: unknown argument %q", line, a)
		}
	}
	return c
}
