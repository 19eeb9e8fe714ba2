package ingress_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

type streamed struct {
	subject string
	data    []byte
}

// eventsByID reads the whole events stream and fails on a message id seen
// twice.
func eventsByID(t *testing.T, js jetstream.JetStream, want int) map[string]streamed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream.EventsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]streamed{}
	for len(got) < want {
		batch, err := c.Fetch(want-len(got), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(jetstream.MsgIDHeader)
			if _, dup := got[id]; dup || id == "" {
				t.Fatalf("message id %q twice (or empty) on the events stream", id)
			}
			got[id] = streamed{subject: m.Subject(), data: m.Data()}
		}
		if n == 0 {
			t.Fatalf("%d of %d events on the stream", len(got), want)
		}
	}
	return got
}

// The events stream is a projection: deleted and recreated, it is rebuilt
// by Republish with the same ids, subjects and bodies, each event once; a
// second republish within the duplicate window adds nothing.
func TestManager_RepublishRebuildsTheEventsStream(t *testing.T) {
	e := ingresstest.Start(t, ingresstest.Options{Shards: 1})
	ctx := context.Background()
	const n = 40
	for i := range n {
		addr := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: fmt.Sprint("c", i%7)}
		res, err := e.Node.Submit(ctx, actor.Command{
			ID: fmt.Sprintf("c%d", i), Type: "cmd.counter.add", Address: addr, Payload: []byte(`{"amount":1}`),
			IdempotencyKey: fmt.Sprintf("k%d", i), Security: producer,
		})
		if err != nil || res.Status != actor.StatusAccepted {
			t.Fatalf("submit %d: %+v %v", i, res, err)
		}
	}
	st, err := e.JS.Stream(ctx, stream.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "events relayed", func() (bool, string) {
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= n, fmt.Sprintf("%d of %d", info.State.Msgs, n)
	})
	first := eventsByID(t, e.JS, n)

	cfg := st.CachedInfo().Config
	if err := e.JS.DeleteStream(ctx, stream.EventsStream); err != nil {
		t.Fatal(err)
	}
	if _, err := e.JS.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	republish := func() int {
		t.Helper()
		total, from := 0, engine.Position{}
		for range n + 1 {
			k, next, done, err := e.Manager.Republish(ctx, 0, from, 7) // pages cut inside entries too
			if err != nil {
				t.Fatalf("Republish from %v: %v", from, err)
			}
			total += k
			if done {
				return total
			}
			from = next
		}
		t.Fatal("Republish never done")
		return 0
	}
	if got := republish(); got != n {
		t.Fatalf("republished %d events, want %d", got, n)
	}
	again := eventsByID(t, e.JS, n)
	for id, m := range first {
		r, ok := again[id]
		if !ok || r.subject != m.subject || !bytes.Equal(r.data, m.data) {
			t.Fatalf("event %s: republished as %+v (ok %v), first %+v", id, r, ok, m)
		}
	}
	if len(again) != len(first) {
		t.Fatalf("%d events after republish, %d before", len(again), len(first))
	}

	republish() // within the duplicate window: dropped
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("%d messages after a second republish, want %d", info.State.Msgs, n)
	}

	if _, _, _, err := e.Manager.Republish(ctx, 9, engine.Position{}, 1); !errors.Is(err, ingress.ErrShardNotHere) {
		t.Fatalf("republish of a shard not on this node: %v, want ErrShardNotHere", err)
	}
}

// RepublishRange stops at to (inclusive) and recreates a missing events
// stream first: after a deletion, a bounded republish stores exactly the
// events up to to, and the next call from Next the rest, each once.
func TestManager_RepublishRangeBoundedOnAMissingStream(t *testing.T) {
	e := ingresstest.Start(t, ingresstest.Options{Shards: 1})
	ctx := context.Background()
	const n = 12
	var positions []engine.Position
	for i := range n {
		addr := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: fmt.Sprint("c", i%3)}
		res, err := e.Node.Submit(ctx, actor.Command{
			ID: fmt.Sprintf("c%d", i), Type: "cmd.counter.add", Address: addr, Payload: []byte(`{"amount":1}`),
			IdempotencyKey: fmt.Sprintf("k%d", i), Security: producer,
		})
		if err != nil || res.Status != actor.StatusAccepted || len(res.Events) != 1 {
			t.Fatalf("submit %d: %+v %v", i, res, err)
		}
		positions = append(positions, engine.Position{Index: res.Events[0].Index, Ordinal: res.Events[0].Ordinal})
	}
	st, err := e.JS.Stream(ctx, stream.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "events relayed", func() (bool, string) {
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs >= n, fmt.Sprintf("%d of %d", info.State.Msgs, n)
	})
	if err := e.JS.DeleteStream(ctx, stream.EventsStream); err != nil {
		t.Fatal(err)
	}
	to := positions[4]
	r, err := e.Manager.RepublishRange(ctx, 0, engine.Position{}, to, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 5 || !r.Done || r.Last != to {
		t.Fatalf("republish up to %v: %+v, want 5 events, done, the last at %v", to, r, to)
	}
	if got := eventsByID(t, e.JS, 5); len(got) != 5 {
		t.Fatalf("%d events on the recreated stream, want 5", len(got))
	}
	r, err = e.Manager.RepublishRange(ctx, 0, r.Next, engine.Position{}, 0)
	if err != nil || r.Count != n-5 || !r.Done || r.Last != positions[n-1] {
		t.Fatalf("republish of the rest from %v: %+v %v, want %d events ending at %v", to, r, err, n-5, positions[n-1])
	}
	eventsByID(t, e.JS, n)
	// A range that holds nothing: 0 events, done.
	r, err = e.Manager.RepublishRange(ctx, 0, engine.Position{Index: positions[n-1].Index + 1000}, engine.Position{}, 0)
	if err != nil || r.Count != 0 || !r.Done {
		t.Fatalf("republish past the end: %+v %v, want 0 events, done", r, err)
	}
}
