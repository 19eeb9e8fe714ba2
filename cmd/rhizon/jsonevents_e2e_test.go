package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/client"
)

// seedEnvelope is the JSON envelope as a consumer written for the original
// runtime declares it: its own struct, encoding/json, no Rhizon package.
type seedEnvelope struct {
	MessageID     string          `json:"message_id"`
	Tenant        string          `json:"tenant"`
	Workspace     string          `json:"workspace"`
	ActorType     string          `json:"actor_type"`
	EntityID      string          `json:"entity_id"`
	EventType     string          `json:"event_type"`
	Name          string          `json:"name"`
	SchemaVersion uint32          `json:"schema_version"`
	Version       uint64          `json:"version"`
	Timestamp     int64           `json:"timestamp"`
	CommandID     string          `json:"command_id"`
	CorrelationID string          `json:"correlation_id"`
	Payload       json.RawMessage `json:"payload"`
	Position      struct {
		Shard   uint32 `json:"shard"`
		Index   uint64 `json:"index"`
		Ordinal uint32 `json:"ordinal"`
	} `json:"position"`
}

type seedMsg struct {
	subject, msgID string
	env            seedEnvelope
}

// seedConsume is the seed-shaped consumer: plain nats.go, subscribed to
// evt.<tenant>.<workspace>.> through an ordered JetStream consumer from the
// start of the stream, decoding each message with encoding/json, until it
// has want messages.
func seedConsume(t *testing.T, natsURL, tenant, workspace string, want int) []seedMsg {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "RHIZON_EVENTS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"evt." + tenant + "." + workspace + ".>"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []seedMsg
	for len(out) < want && ctx.Err() == nil {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var env seedEnvelope
			if err := json.Unmarshal(m.Data(), &env); err != nil {
				t.Fatalf("%s: not a JSON envelope: %v: %s", m.Subject(), err, m.Data())
			}
			out = append(out, seedMsg{subject: m.Subject(), msgID: m.Headers().Get(jetstream.MsgIDHeader), env: env})
		}
	}
	if len(out) < want {
		t.Fatalf("the seed consumer read %d of %d JSON events", len(out), want)
	}
	return out
}

// checkSeedEvents checks the envelopes against the entities' histories:
// one per event, on evt.<tenant>.<workspace>.<actor_type>.<name>, every
// field as recorded, and message ids as wantID makes them from event ids.
func checkSeedEvents(t *testing.T, cl *client.Client, got []seedMsg, tenant, ws string, entities []string, wantID func(string) string) {
	t.Helper()
	byID := map[string]seedMsg{}
	for _, m := range got {
		byID[m.env.MessageID] = m
	}
	n := 0
	for _, e := range entities {
		typ, id, _ := strings.Cut(e, "/")
		h, err := cl.History(context.Background(), &pb.HistoryRequest{Address: &pb.Address{Tenant: tenant, Workspace: ws, ActorType: typ, EntityId: id}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range h.GetRecords() {
			ev := r.GetEvent()
			n++
			m, ok := byID[ev.GetId()]
			if !ok {
				t.Errorf("event %s (%s v%d) not among the JSON events", ev.GetId(), e, ev.GetVersion())
				continue
			}
			name := strings.TrimPrefix(ev.GetType(), "evt."+typ+".")
			wantSubj := fmt.Sprintf("evt.%s.%s.%s.%s", tenant, ws, typ, name)
			env := m.env
			if m.subject != wantSubj || m.msgID != wantID(ev.GetId()) || env.Tenant != tenant || env.Workspace != ws ||
				env.ActorType != typ || env.EntityID != id || env.EventType != ev.GetType() || env.Name != name ||
				env.SchemaVersion != 1 || env.Version != ev.GetVersion() || env.Timestamp != ev.GetAt() ||
				env.CommandID != ev.GetCommandId() || env.CorrelationID != ev.GetCorrelationId() ||
				env.Position.Shard != ev.GetShard() || env.Position.Index != ev.GetIndex() || env.Position.Ordinal != ev.GetOrdinal() {
				t.Errorf("JSON event on %s (msg id %s) = %+v; recorded %v", m.subject, m.msgID, env, ev)
			}
			var want, have any
			if json.Unmarshal(ev.GetPayload(), &want) != nil || json.Unmarshal(env.Payload, &have) != nil || fmt.Sprint(want) != fmt.Sprint(have) {
				t.Errorf("payload %s, recorded %s", env.Payload, ev.GetPayload())
			}
		}
	}
	if n != len(got) {
		t.Errorf("%d JSON events for %d recorded events", len(got), n)
	}
}

// `rhizon dev --events-format json` (here RHIZON_EVENTS_FORMAT): a consumer
// of the original runtime's JSON envelopes reads every event; `rhizon watch`
// (which then reads the JSON subjects) and `rhizon history` show the schema
// version.
func TestJSONEvents_SeedConsumerReadsDev(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const tok, admin = "user-token-jsonevents-0123456789", "admin-token-jsonevents-0123456789"
	tokens := fmt.Sprintf(`{"tokens":[{"token":%q,"principal":{"id":"dev","type":"user"},"scopes":[{"tenant":"dev","workspace":"*"}]},
		{"token":%q,"role":"admin","principal":{"id":"ops","type":"user"}}]}`, tok, admin)
	if err := os.WriteFile(filepath.Join(dir, "token.json"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startDev(t, dir, "RHIZON_EVENTS_FORMAT=json")
	cl, err := client.Dial(p.addr, client.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	subs := []*pb.SubmitRequest{
		{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, Type: "cmd.counter.add", Payload: []byte(`{"amount":2}`), IdempotencyKey: "k1"},
		{Address: &pb.Address{ActorType: "counter", EntityId: "c1"}, Type: "cmd.counter.add", Payload: []byte(`{"amount":3}`), IdempotencyKey: "k2"},
		{Address: &pb.Address{ActorType: "kv", EntityId: "doc.1"}, Type: "cmd.kv.create", Payload: []byte(`{"doc":{"name":"Ada"}}`), IdempotencyKey: "k3"},
	}
	for _, s := range subs {
		s.Address.Tenant, s.Address.Workspace = "dev", "default"
		if r, err := cl.Submit(context.Background(), s); err != nil || r.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("submit %s: %v %v", s.GetType(), r, err)
		}
	}
	got := seedConsume(t, p.nats, "dev", "default", 3)
	checkSeedEvents(t, cl, got, "dev", "default", []string{"counter/c1", "kv/doc.1"}, func(id string) string { return id })

	out, code := p.rhizon(t, "watch", "--tenant", "dev", "--workspace", "default", "--entity", "counter/c1", "--from-beginning", "--count", "2", "-o", "json", "--timeout", "30s")
	if code != 0 {
		t.Fatalf("watch: exit %d: %s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("watch printed %d lines, want 2: %s", len(lines), out)
	}
	for i, l := range lines {
		var w struct {
			Event struct {
				Version       uint64 `json:"version"`
				SchemaVersion uint32 `json:"schema_version"`
				Address       struct {
					EntityID string `json:"entity_id"`
				} `json:"address"`
			} `json:"event"`
		}
		if err := json.Unmarshal([]byte(l), &w); err != nil || w.Event.Version != uint64(i+1) || w.Event.SchemaVersion != 1 || w.Event.Address.EntityID != "c1" {
			t.Errorf("watch line %d: %s (%v)", i, l, err)
		}
	}
	out, code = p.rhizon(t, "history", "counter/c1", "--tenant", "dev", "--workspace", "default")
	if code != 0 || !strings.Contains(out, "SCHEMA") || strings.Count(out, " v1 ") != 2 {
		t.Errorf("history: exit %d:\n%s", code, out)
	}
	// Republishing every shard's history publishes the JSON events again
	// under the same message ids: JetStream drops them all as duplicates.
	for sh := range 4 {
		if out, code := p.rhizon(t, "events", "republish", "--token", admin, "--shard", fmt.Sprint(sh)); code != 0 {
			t.Fatalf("republish shard %d: exit %d: %s", sh, code, out)
		}
	}
	js := natsJS(t, p.nats)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "RHIZON_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("after republish the events stream holds %d messages, want the 3 JSON events once each", info.State.Msgs)
	}
}

// A 3-node cluster with --events-format both: each event is on the stream
// twice, as protobuf under its event id and as JSON under json/<id>, and the
// seed consumer reads the JSON ones whichever node led the shard.
func TestJSONEvents_SeedConsumerReadsThreeNodeCluster(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, time.Minute)
	c.withNATS()
	for _, p := range c.nodes {
		p.env = append(p.env, "RHIZON_EVENTS_FORMAT=both")
		p.start(t)
	}
	c.waitConverged(c.nodes[0], 90*time.Second)
	c.waitJetStream(60 * time.Second)
	cl, err := client.Dial(c.nodes[0].grpc, client.WithToken(clusterToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	const n = 12
	var entities []string
	for i := range n {
		id := fmt.Sprint("c", i%6)
		if i < 6 {
			entities = append(entities, "counter/"+id)
		}
		r, err := cl.Submit(context.Background(), &pb.SubmitRequest{
			Address: &pb.Address{Tenant: "t", Workspace: "seed", ActorType: "counter", EntityId: id},
			Type:    "cmd.counter.add", Payload: []byte(`{"amount":1}`), IdempotencyKey: fmt.Sprint("k", i),
		})
		if err != nil || r.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("submit %d: %v %v", i, r, err)
		}
	}
	got := seedConsume(t, c.nodes[1].natsURL(t), "t", "seed", n)
	checkSeedEvents(t, cl, got, "t", "seed", entities, func(id string) string { return "json/" + id })
	// The protobuf copies are there too, under the event ids.
	nc, err := nats.Connect(c.nodes[2].natsURL(t), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "RHIZON_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("rhizon.evt.t.seed.>"))
	if err != nil {
		t.Fatal(err)
	}
	var pbCount uint64
	for _, k := range info.State.Subjects {
		pbCount += k
	}
	if pbCount != n {
		t.Errorf("%d protobuf events on rhizon.evt.t.seed.>, want %d", pbCount, n)
	}
}
