package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/otlptest"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/shard"
)

// otelEnv points a node's standard OTEL_* variables at r (no flag), with a
// short batch delay so spans arrive while the test waits.
func otelEnv(r *otlptest.Receiver) []string {
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + r.GRPCAddr, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_METRIC_EXPORT_INTERVAL=500",
	}
}

// traceOf indexes the received spans of one trace by span id.
type traceOf map[string]otlptest.Span

func spansOf(r *otlptest.Receiver, traceID string) traceOf {
	out := traceOf{}
	for _, s := range r.Spans() {
		if s.TraceID == traceID {
			out[s.SpanID] = s
		}
	}
	return out
}

// ancestor reports whether a is s or one of its ancestors in tr.
func (tr traceOf) ancestor(a string, s otlptest.Span) bool {
	for range len(tr) + 1 {
		if s.SpanID == a {
			return true
		}
		p, ok := tr[s.ParentID]
		if !ok {
			return false
		}
		s = p
	}
	return false
}

// picture renders tr as an indented tree: name [node] key attributes.
func (tr traceOf) picture() string {
	kids := map[string][]otlptest.Span{}
	var roots []otlptest.Span
	for _, s := range tr {
		if _, ok := tr[s.ParentID]; ok {
			kids[s.ParentID] = append(kids[s.ParentID], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s otlptest.Span, depth int)
	walk = func(s otlptest.Span, depth int) {
		fmt.Fprintf(&b, "%s%s [%s]", strings.Repeat("  ", depth), s.Name, s.Resource["service.instance.id"])
		var keys []string
		for k := range s.Attrs {
			if strings.HasPrefix(k, "rhizon.") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%s", strings.TrimPrefix(k, "rhizon."), s.Attrs[k])
		}
		b.WriteString("\n")
		ks := kids[s.SpanID]
		sort.Slice(ks, func(i, j int) bool { return ks[i].Name < ks[j].Name })
		for _, k := range ks {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

// applySpans are the engine.apply spans of a command id, on any replica.
func applySpans(r *otlptest.Receiver, commandID string) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range r.Spans() {
		if s.Name == "engine.apply" && s.Attrs["rhizon.command.id"] == commandID {
			out = append(out, s)
		}
	}
	return out
}

// spanByID finds a received span by id, in any trace.
func spanByID(r *otlptest.Receiver, id string) (otlptest.Span, bool) {
	for _, s := range r.Spans() {
		if s.SpanID == id {
			return s, true
		}
	}
	return otlptest.Span{}, false
}

func linksTo(s otlptest.Span, spanID string) bool {
	for _, l := range s.Links {
		if l.SpanID == spanID {
			return true
		}
	}
	return false
}

func wantAttrs(t *testing.T, s otlptest.Span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if s.Attrs[k] != v {
			t.Errorf("%s on %s: %s = %q, want %q (all: %v)", s.Name, s.Resource["service.instance.id"], k, s.Attrs[k], v, s.Attrs)
		}
	}
}

// A command sent to a node that does not lead its shard forms one trace
// with the leader's work: the gateway's server span on the follower, the
// forward's client span, the leader's server span and shard.submit, and the
// engine.apply span of every replica as a child of the gateway span (the
// traceparent the command carries through the Raft log), with the command's
// attributes. A conflict and an idempotency hit show in the attributes.
func TestTrace_ForwardedCommandIsOneTrace(t *testing.T) {
	t.Parallel()
	r := otlptest.Start(t, nil)
	c := newTestCluster(t, 3, time.Minute)
	for _, p := range c.nodes {
		p.env = otelEnv(r)
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 60*time.Second)

	// The same entity through each node: at least two of them forward.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, p := range c.nodes {
		if _, err := c.client(p).Submit(ctx, submitReq("traced", fmt.Sprintf("tr-%d", i))); err != nil {
			t.Fatalf("submit through %s: %v", p.id, err)
		}
	}
	forwarded := 0
	for i, p := range c.nodes {
		id := fmt.Sprintf("cmd-tr-%d", i)
		var applies []otlptest.Span
		testkit.Poll{Timeout: 20 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "engine.apply spans of "+id, func() (bool, string) {
			applies = applySpans(r, id)
			return len(applies) == 3, fmt.Sprintf("%d engine.apply spans of %s, want one per replica", len(applies), id)
		})
		tr := spansOf(r, applies[0].TraceID)
		gw, ok := tr[applies[0].ParentID]
		// The Go client submits over SubmitStream by default: one span per
		// message, named after the stream's method.
		isSubmit := strings.HasSuffix(gw.Name, "Gateway/Submit") || strings.HasSuffix(gw.Name, "Gateway/SubmitStream")
		if !ok || !isSubmit || gw.Resource["service.instance.id"] != p.id {
			t.Fatalf("engine.apply of %s: parent %+v, want the Gateway/Submit(Stream) span on %s; trace:\n%s", id, gw, p.id, tr.picture())
		}
		for _, a := range applies {
			if a.TraceID != gw.TraceID || a.ParentID != gw.SpanID {
				t.Errorf("engine.apply on %s is not a child of the gateway span", a.Resource["service.instance.id"])
			}
			if len(a.Links) != 1 {
				t.Errorf("engine.apply links %v, want one: its entry's shard.apply span", a.Links)
			} else if e, ok := spanByID(r, a.Links[0].SpanID); !ok || e.Name != "shard.apply" || !linksTo(e, gw.SpanID) {
				t.Errorf("engine.apply on %s links to %+v, want the entry's shard.apply span, which links back to the gateway span",
					a.Resource["service.instance.id"], e)
			}
			wantAttrs(t, a, map[string]string{
				"rhizon.command.type": "cmd.counter.add", "rhizon.tenant": "t", "rhizon.actor_type": "counter",
				"rhizon.entity_id": "traced", "rhizon.result.status": "accepted", "rhizon.result.code": "accepted",
				"rhizon.idempotency.hit": "false", "rhizon.conflict": "false", "rhizon.violation": "false",
			})
		}
		// The leader's shard.submit: on the submitting node, or behind a forward.
		var submit otlptest.Span
		testkit.Poll{Timeout: 10 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "shard.submit of "+id, func() (bool, string) {
			tr = spansOf(r, gw.TraceID)
			for _, s := range tr {
				if s.Name == "shard.submit" {
					submit = s
					return true, ""
				}
			}
			return false, "no shard.submit in the trace:\n" + tr.picture()
		})
		leader := submit.Resource["service.instance.id"]
		if !tr.ancestor(gw.SpanID, submit) {
			t.Errorf("shard.submit on %s is not under the gateway span of %s:\n%s", leader, p.id, tr.picture())
		}
		wantAttrs(t, submit, map[string]string{"rhizon.command.id": id, "rhizon.result.status": "accepted"})
		if leader == p.id {
			continue
		}
		forwarded++
		server, ok := tr[submit.ParentID]
		if !ok || server.Resource["service.instance.id"] != leader || server.Kind.String() != "SPAN_KIND_SERVER" {
			t.Fatalf("shard.submit on %s: parent %+v, want the leader's server span of the forward:\n%s", leader, server, tr.picture())
		}
		client, ok := tr[server.ParentID]
		if !ok || client.Resource["service.instance.id"] != p.id || client.Kind.String() != "SPAN_KIND_CLIENT" || !tr.ancestor(gw.SpanID, client) {
			t.Fatalf("the leader's server span: parent %+v, want the forward's client span on %s:\n%s", client, p.id, tr.picture())
		}
		if forwarded == 1 {
			t.Logf("trace of a command sent to %s and forwarded to leader %s:\n%s", p.id, leader, tr.picture())
		}
	}
	if forwarded == 0 {
		t.Fatal("no submission was forwarded: the test proves nothing about forwards")
	}

	// A conflict and an idempotency hit, through the first node.
	cl := c.client(c.nodes[0])
	req := submitReq("traced", "tr-conflict")
	v := uint64(999)
	req.ExpectedVersion = &v
	if _, err := cl.Submit(ctx, req); err != nil {
		t.Fatal(err)
	}
	dup := submitReq("traced", "tr-0")
	dup.CommandId = "cmd-tr-0-again"
	if _, err := cl.Submit(ctx, dup); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]map[string]string{
		"cmd-tr-conflict": {"rhizon.conflict": "true", "rhizon.result.status": "rejected", "rhizon.result.reason": "conflict", "rhizon.result.code": "version_conflict"},
		"cmd-tr-0-again":  {"rhizon.idempotency.hit": "true", "rhizon.result.status": "accepted"},
	} {
		testkit.Poll{Timeout: 20 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "engine.apply of "+id, func() (bool, string) {
			n := len(applySpans(r, id))
			return n > 0, fmt.Sprintf("%d engine.apply spans of %s", n, id)
		})
		wantAttrs(t, applySpans(r, id)[0], want)
	}
	testkit.Eventually(t, 10*time.Second, "node metrics over OTLP", func() (bool, string) {
		for _, m := range r.Metrics() {
			if strings.HasPrefix(m, "rhizon.") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no rhizon.* metric among %d received", len(r.Metrics()))
	})
}

// A command published to JetStream with a traceparent header continues the
// producer's trace: ingress.consume is its child, the command's engine.apply
// a child of ingress.consume, and the relay's publication of the resulting
// event a child of it too, whose id the event message carries in its own
// traceparent header for the next consumer.
func TestTrace_IngressCommandContinuesTheProducersTrace(t *testing.T) {
	t.Parallel()
	r := otlptest.Start(t, nil)
	p := startDev(t, t.TempDir(), otelEnv(r)...)
	js := producerJS(t, p.nats, p.token)
	cmd := &pb.Command{
		Type: "cmd.counter.add", Address: &pb.Address{Tenant: "dev", Workspace: "default", ActorType: "counter", EntityId: "js-traced"},
		Payload: []byte(`{"amount":1}`), IdempotencyKey: "js-traced-1", Id: "js-traced-cmd",
	}
	data, _ := proto.Marshal(cmd)
	msg := nats.NewMsg(stream.IngressSubject(shard.Of(cmd.Address.ToActor(), 4)))
	msg.Data = data
	const producerTrace, producerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	msg.Header.Set("traceparent", "00-"+producerTrace+"-"+producerSpan+"-01")
	publishIngress(t, js, msg)

	var tr traceOf
	var consume, apply, relay otlptest.Span
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.Eventually(t, "ingress, apply and relay spans", func() (bool, string) {
		tr = spansOf(r, producerTrace)
		consume, apply, relay = otlptest.Span{}, otlptest.Span{}, otlptest.Span{}
		for _, s := range tr {
			switch s.Name {
			case "ingress.consume":
				consume = s
			case "engine.apply":
				apply = s
			case "relay.publish":
				relay = s
			}
		}
		return consume.Name != "" && apply.Name != "" && relay.Name != "", "trace so far:\n" + tr.picture()
	})
	if consume.ParentID != producerSpan || consume.Kind.String() != "SPAN_KIND_CONSUMER" {
		t.Errorf("ingress.consume: parent %s kind %v, want the producer's span %s, consumer", consume.ParentID, consume.Kind, producerSpan)
	}
	if apply.ParentID != consume.SpanID {
		t.Errorf("engine.apply's parent is %s, want ingress.consume %s:\n%s", apply.ParentID, consume.SpanID, tr.picture())
	}
	if relay.ParentID != consume.SpanID || relay.Kind.String() != "SPAN_KIND_PRODUCER" {
		t.Errorf("relay.publish: parent %s kind %v, want ingress.consume %s (the event's traceparent), producer", relay.ParentID, relay.Kind, consume.SpanID)
	}
	wantAttrs(t, consume, map[string]string{"rhizon.command.type": "cmd.counter.add", "rhizon.entity_id": "js-traced",
		"rhizon.result.status": "accepted", "messaging.system": "nats"})
	wantAttrs(t, apply, map[string]string{"rhizon.command.id": "js-traced-cmd", "rhizon.tenant": "dev", "rhizon.workspace": "default",
		"rhizon.result.status": "accepted", "rhizon.idempotency.hit": "false"})
	t.Logf("trace of a command published to JetStream:\n%s", tr.picture())

	// The event on the events stream names the relay's span.
	ejs := natsJS(t, p.nats)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := ejs.OrderedConsumer(ctx, stream.EventsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if want := "00-" + producerTrace + "-" + relay.SpanID + "-01"; ev.Headers().Get("traceparent") != want {
		t.Errorf("event's traceparent header %q, want %q", ev.Headers().Get("traceparent"), want)
	}
}
