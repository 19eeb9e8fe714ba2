package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/client"
	"github.com/rhizon/rhizon/internal/testkit"
)

type streamedEvent struct {
	subject string
	data    []byte
}

// readEvents reads the whole events stream with a fresh ordered consumer
// and fails on a message id seen twice or missing.
func readEvents(t *testing.T, js jetstream.JetStream, want int) map[string]streamedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream.EventsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]streamedEvent{}
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
			got[id] = streamedEvent{subject: m.Subject(), data: m.Data()}
		}
		if n == 0 {
			t.Fatalf("%d of %d events on the stream", len(got), want)
		}
	}
	return got
}

// The events stream is a projection of the shards' histories: deleted, it
// is rebuilt by `rhizon events republish` (an admin token's call, routed to
// each shard's leader) with every event once, under its first message id,
// subject and body. Other tokens are refused.
func TestEventsRepublish_RebuildsADeletedEventsStream(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const user, admin = "user-token-republish-0123456789", "admin-token-republish-0123456789"
	tokens := fmt.Sprintf(`{"tokens":[
		{"token":%q,"principal":{"id":"dev","type":"user"},"scopes":[{"tenant":"dev","workspace":"*"}]},
		{"token":%q,"role":"admin","principal":{"id":"ops","type":"user"}}]}`, user, admin)
	if err := os.WriteFile(filepath.Join(dir, "token.json"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startDev(t, dir)

	cl, err := client.Dial(p.addr, client.WithToken(user))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	const n = 30
	for i := range n {
		resp, err := cl.Submit(ctx, &pb.SubmitRequest{
			Address: &pb.Address{Tenant: "dev", Workspace: "default", ActorType: "counter", EntityId: fmt.Sprint("c", i%9)},
			Type:    "cmd.counter.add", Payload: []byte(`{"amount":1}`), IdempotencyKey: fmt.Sprint("k", i),
		})
		if err != nil || resp.GetResult().GetStatus() != pb.Status_STATUS_ACCEPTED {
			t.Fatalf("submit %d: %v %v", i, resp, err)
		}
	}
	js := natsJS(t, p.nats)
	testkit.Poll{Timeout: 30 * time.Second, Every: 100 * time.Millisecond}.EventuallyNil(t, "events relayed", func() error {
		s, err := js.Stream(ctx, stream.EventsStream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs < n {
			return fmt.Errorf("%d of %d events on the stream", info.State.Msgs, n)
		}
		return nil
	})
	first := readEvents(t, js, n)

	// Refused: a tenant token (exit 1, permission denied), a bad shard
	// (exit 1, invalid argument), a bad position (exit 2, usage).
	if _, code := p.rhizon(t, "events", "republish", "--shard", "0"); code != exitError {
		t.Fatalf("republish with a tenant token: exit %d, want %d", code, exitError)
	}
	if _, code := p.rhizon(t, "events", "republish", "--token", admin, "--shard", "4"); code != exitError {
		t.Fatalf("republish of shard 4 of 4: exit %d, want %d", code, exitError)
	}
	if _, code := p.rhizon(t, "events", "republish", "--token", admin, "--shard", "0", "--from", "x.1"); code != exitUsage {
		t.Fatalf("republish --from x.1: exit %d, want %d", code, exitUsage)
	}
	if _, code := p.rhizon(t, "events", "republish", "--token", admin); code != exitUsage {
		t.Fatalf("republish without --shard: exit %d, want %d", code, exitUsage)
	}

	if err := js.DeleteStream(ctx, stream.EventsStream); err != nil {
		t.Fatal(err)
	}
	total := 0
	for sh := range 4 {
		// Small pages: the CLI follows next until done.
		out, code := p.rhizon(t, "events", "republish", "--token", admin, "--shard", fmt.Sprint(sh), "--from", "0", "--page", "4", "-o", "json")
		if code != 0 {
			t.Fatalf("republish shard %d: exit %d", sh, code)
		}
		var got struct {
			Republished int    `json:"republished"`
			NodeID      string `json:"node_id"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.NodeID != "dev" {
			t.Fatalf("republish shard %d: %q (%v)", sh, out, err)
		}
		total += got.Republished
	}
	if total != n {
		t.Fatalf("republished %d events over the 4 shards, want %d", total, n)
	}
	again := readEvents(t, js, n)
	for id, m := range first {
		r, ok := again[id]
		if !ok || r.subject != m.subject || !bytes.Equal(r.data, m.data) {
			t.Fatalf("event %s: republished as %+v (found %v), first %+v", id, r, ok, m)
		}
	}
	// Nothing past the last event: 0 events, exit 0.
	out, code := p.rhizon(t, "events", "republish", "--token", admin, "--shard", "0", "--from", "1000000")
	if code != 0 || !strings.Contains(out, "nothing republished") {
		t.Fatalf("republish past the end: exit %d %q", code, out)
	}
}
