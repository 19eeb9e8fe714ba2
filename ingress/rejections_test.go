package ingress_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

// watched collects what a Watch delivers.
type watched struct {
	mu  sync.Mutex
	got []*pb.WatchEvent
}

func (w *watched) add(ev *pb.WatchEvent) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, ev)
	return nil
}

func (w *watched) list() []*pb.WatchEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*pb.WatchEvent(nil), w.got...)
}

// Rejections are published on the events stream, once each by message id,
// on <entity subject>.rejected: a Watch of the entity that asks for them gets
// the conflict after the event; a violation by tenant b's token on tenant t's
// entity goes to the offender's audit stream's subject (tenant _rhizon),
// neither to t's nor to b's; repeats of it within the window are not
// published again.
// With three NATS replicas the relay publishes in atomic batches, with one
// in waves: both carry rejections.
func TestRelay_RejectionsArePublished(t *testing.T) {
	t.Run("one replica", func(t *testing.T) { testRejectionsPublished(t, ingresstest.Start(t, ingresstest.Options{Shards: 2})) })
	t.Run("three replicas", func(t *testing.T) {
		testRejectionsPublished(t, ingresstest.Start(t, ingresstest.Options{Shards: 2, NATSURLs: ingress.StartNATSCluster(t)}))
	})
}

func testRejectionsPublished(t *testing.T, e *ingresstest.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watch := func(f stream.WatchFilter) *watched {
		w := &watched{}
		go func() { _ = e.Manager.Watch(ctx, f, w.add) }()
		return w
	}
	entity := watch(stream.WatchFilter{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "r1", FromBeginning: true, Rejections: true})
	eventsOnly := watch(stream.WatchFilter{Tenant: "t", Workspace: "w", FromBeginning: true})
	offender := watch(stream.WatchFilter{Tenant: "b", Workspace: "w", FromBeginning: true, Rejections: true})
	audit := watch(stream.WatchFilter{Tenant: actor.AuditTenant, Workspace: actor.AuditWorkspace, FromBeginning: true, Rejections: true})

	target := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "r1"}
	mallory := actor.Security{Principal: actor.Principal{ID: "mallory", Type: actor.PrincipalUser},
		Scopes: []actor.Scope{{Tenant: "b", Workspace: "w"}}}
	submit := func(id, key string, sec actor.Security, expected *uint64) actor.Result {
		t.Helper()
		res, err := e.Node.Submit(ctx, actor.Command{ID: id, Type: "cmd.counter.add", Address: target,
			Payload: []byte(`{"amount":1}`), IdempotencyKey: key, Security: sec, ExpectedVersion: expected})
		if err != nil {
			t.Fatalf("submit %s: %v", id, err)
		}
		return res
	}
	seven := uint64(7)
	if r := submit("c1", "k1", producer, nil); r.Status != actor.StatusAccepted {
		t.Fatalf("add: %+v", r)
	}
	if r := submit("c2", "k2", producer, &seven); r.Code != actor.CodeVersionConflict {
		t.Fatalf("conflict: %+v", r)
	}
	for i := range 3 { // one record, counted three times
		if r := submit(fmt.Sprintf("v%d", i), "k1", mallory, nil); r.Reason != actor.ReasonViolation {
			t.Fatalf("violation: %+v", r)
		}
	}

	testkit.Eventually(t, 30*time.Second, "the entity's watch gets the event and the conflict", func() (bool, string) {
		got := entity.list()
		return len(got) == 2, fmt.Sprintf("%d records", len(got))
	})
	got := entity.list()
	if got[0].GetEvent().GetType() != "evt.counter.added" || got[1].GetRejection().GetCode() != actor.CodeVersionConflict ||
		got[1].GetRejection().GetType() != "evt.counter.rejected" || got[1].GetRejection().GetIdempotencyKey() != "k2" {
		t.Fatalf("entity watch: %v", got)
	}
	testkit.Eventually(t, 30*time.Second, "the audit watch gets the violation", func() (bool, string) {
		return len(audit.list()) >= 1, fmt.Sprintf("%d records", len(audit.list()))
	})
	v := audit.list()[0].GetRejection()
	if v.GetType() != engine.ViolationEventType || v.GetPrincipal().GetId() != "mallory" || v.GetAddress().GetTenant() != "t" {
		t.Fatalf("audit watch: %v", v)
	}

	// Everything is on the stream now: 1 event, 1 conflict, 1 violation.
	s, err := e.JS.Stream(ctx, stream.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "three messages", func() (bool, string) {
		info, err := s.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 3, fmt.Sprintf("%d messages", info.State.Msgs)
	})
	testkit.Consistently(t, time.Second, "no more messages, nothing for the offender's tenant, no rejection for an events-only watch", func() (bool, string) {
		info, err := s.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		if info.State.Msgs != 3 {
			return false, fmt.Sprintf("%d messages (a repeated violation published?)", info.State.Msgs)
		}
		if n := len(offender.list()); n != 0 {
			return false, fmt.Sprintf("the offender's tenant watch got %d records", n)
		}
		for _, ev := range eventsOnly.list() {
			if ev.GetRejection() != nil {
				return false, "a watch without include rejections got one"
			}
		}
		return len(audit.list()) == 1, fmt.Sprintf("audit watch has %d records", len(audit.list()))
	})

	// Exactly once by message id: the conflict published again (as a new
	// leader's relay would) is a duplicate.
	rj := got[1].GetRejection()
	raw, err := s.GetLastMsgForSubject(ctx, stream.RejectionSubject(target))
	if err != nil {
		t.Fatal(err)
	}
	id := raw.Header.Get(jetstream.MsgIDHeader)
	if id != stream.RejectionMsgID(rj.Shard, rj.Index, rj.Ordinal) {
		t.Fatalf("message id %q", id)
	}
	m := nats.NewMsg(raw.Subject)
	m.Data = raw.Data
	ack, err := e.JS.PublishMsg(ctx, m, jetstream.WithMsgID(id))
	if err != nil || !ack.Duplicate {
		t.Fatalf("republished rejection: %+v %v (want a duplicate)", ack, err)
	}
	auditAddr := engine.AuditAddress("mallory", v.Shard, 2)
	if _, err := s.GetLastMsgForSubject(ctx, stream.RejectionSubject(auditAddr)); err != nil {
		t.Fatalf("violation not on its audit stream's subject %s: %v", stream.RejectionSubject(auditAddr), err)
	}
}
