package engine_test

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/recordv1"
	"github.com/rhizon/rhizon/engine"
)

// Every recorded rejection waits in the outbox for the relay, with the bytes
// of its history record at the same position: a conflict, a business
// rejection and a violation (only the first of repeats, which coalesce), but
// no accepted command's row changes.
func TestRejections_PublishedThroughOutbox(t *testing.T) {
	r := newReplica(t, builtin.Registry())
	c1, kv := addr("counter", "c1"), addr("kv", "d1")
	evil := cmd(addr("counter", "c2"), "add", "e1", map[string]int{"amount": 1})
	evil.Security = userB
	evil2 := evil
	evil2.ID = "evil-again"
	r.apply(engine.Entry{Index: 1, At: 1000, Commands: []actor.Command{
		cmd(c1, "add", "k1", map[string]int{"amount": 1}),
		cmd(kv, "create", "k2", `{"doc":{}}`),
	}})
	r.apply(engine.Entry{Index: 2, At: 2000, Commands: []actor.Command{
		withVersion(cmd(c1, "add", "k3", map[string]int{"amount": 1}), 9), // conflict
		cmd(kv, "create", "k4", `{"doc":{}}`),                             // business: exists
		evil,
	}})
	rejections := rejectionRows(t, r, true)
	// A repeat within the window updates the audit record's count and
	// publishes nothing more.
	r.apply(engine.Entry{Index: 3, At: 3000, Commands: []actor.Command{evil2}})
	if again := rejectionRows(t, r, false); len(again) != len(rejections) {
		t.Fatalf("a repeated violation added rows: %d, then %d", len(rejections), len(again))
	}
	want := []struct{ typ, code string }{
		{"evt.counter.rejected", actor.CodeVersionConflict},
		{"evt.kv.rejected", "exists"},
		{engine.ViolationEventType, actor.CodeViolation},
	}
	if len(rejections) != len(want) {
		t.Fatalf("%d rejection rows, want %d: %v", len(rejections), len(want), rejections)
	}
	for i, w := range want {
		if rejections[i].Type != w.typ || rejections[i].Code != w.code {
			t.Errorf("rejection %d: %s %s, want %s %s", i, rejections[i].Type, rejections[i].Code, w.typ, w.code)
		}
	}
}

// rejectionRows decodes the outbox's rejection rows, checking (when same)
// that each is the history record at its position: a coalesced violation's
// record changes later, its published copy does not.
func rejectionRows(t *testing.T, r *replica, same bool) []*recordv1.Rejection {
	t.Helper()
	rows, err := r.store.Outbox(engine.Position{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var rejections []*recordv1.Rejection
	for _, row := range rows {
		if row.Data[0] != engine.OutboxRejection {
			continue
		}
		var rj recordv1.Rejection
		if err := proto.Unmarshal(row.Data[1:], &rj); err != nil {
			t.Fatalf("row at %v: %v", row.Pos, err)
		}
		if rj.Index != row.Pos.Index || rj.Ordinal != row.Pos.Ordinal {
			t.Fatalf("rejection row at %v names position %d/%d", row.Pos, rj.Index, rj.Ordinal)
		}
		// The same bytes as the history record at that position.
		a := rj.Address.ToActor()
		if rj.Type == engine.ViolationEventType {
			a = engine.AuditAddress(rj.Principal.Id, 7, 0)
		}
		found := false
		for _, h := range r.history(a, true) {
			if h.Pos == row.Pos {
				found = bytes.Equal(h.Data, row.Data[1:])
			}
		}
		if same && !found {
			t.Fatalf("rejection row at %v is not the history record there", row.Pos)
		}
		rejections = append(rejections, &rj)
	}
	return rejections
}
