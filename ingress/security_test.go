package ingress_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

// Issue 24 item 1: a SubmitAsync's message id was idem- + sha256(address,
// key), which anyone could compute; a producer that published junk with it
// first made the victim's SubmitAsync answer "duplicate" with nothing
// applied. The id is now keyed by the cluster's signing key.
func TestIngress_AProducerCannotMakeASubmitAsyncVanish(t *testing.T) {
	e := ingresstest.Start(t, ingresstest.Options{Shards: 2, Tune: func(c *ingress.Config) {
		c.Authenticate = func(string) (actor.Security, error) { return producer, nil }
	}})
	addr := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "victim"}
	h := sha256.New()
	h.Write(addr.Key())
	h.Write([]byte{0})
	h.Write([]byte("k1"))
	computed := "idem-" + hex.EncodeToString(h.Sum(nil)[:16])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	junk := nats.NewMsg(stream.IngressSubject(e.Node.ShardOf(addr)))
	junk.Data = []byte("junk")
	junk.Header.Set(stream.HeaderAuthorization, "Bearer "+producerToken)
	if _, err := e.JS.PublishMsg(ctx, junk, jetstream.WithMsgID(computed)); err != nil {
		t.Fatal(err)
	}
	enq, err := e.Manager.Enqueue(ctx, actor.Command{ID: "c1", Type: "cmd.counter.add", Address: addr,
		Payload: []byte(`{"amount":1}`), IdempotencyKey: "k1", Security: producer})
	if err != nil {
		t.Fatal(err)
	}
	if enq.Duplicate {
		t.Fatal("the victim's SubmitAsync was answered duplicate: a producer took its message id")
	}
	en := &env{node: e.Node, js: e.JS}
	testkit.Eventually(t, 20*time.Second, "the victim's command applied", func() (bool, string) {
		v, _ := en.counter(t, "victim")
		return v == 1, fmt.Sprintf("value %d", v)
	})
}

// Issue 24 item 2: the ingress stream takes only the subjects a shard
// consumes, refuses oversize messages and is bounded in bytes and messages;
// so is the dead-letter stream.
func TestIngress_StreamsAreBounded(t *testing.T) {
	e := startEnv(t, 2, nil)
	in := e.streamInfo(t, stream.IngressStream).Config
	if want := []string{stream.IngressSubject(0), stream.IngressSubject(1)}; fmt.Sprint(in.Subjects) != fmt.Sprint(want) {
		t.Errorf("ingress subjects %v, want %v (only the shards' subjects)", in.Subjects, want)
	}
	if in.MaxBytes <= 0 || in.MaxMsgs <= 0 || in.MaxMsgSize <= 0 || in.Discard != jetstream.DiscardNew {
		t.Errorf("ingress stream limits: bytes %d msgs %d msg size %d discard %v; want all set, discard new",
			in.MaxBytes, in.MaxMsgs, in.MaxMsgSize, in.Discard)
	}
	dead := e.streamInfo(t, stream.DeadStream).Config
	if dead.MaxBytes <= 0 || dead.MaxMsgs <= 0 || dead.MaxMsgSize <= 0 {
		t.Errorf("dead-letter stream limits: bytes %d msgs %d msg size %d; want all set", dead.MaxBytes, dead.MaxMsgs, dead.MaxMsgSize)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A subject no shard consumes: nothing would ever remove the message.
	m := nats.NewMsg(stream.IngressSubject(2))
	m.Data = []byte("nobody reads this")
	if _, err := e.js.PublishMsg(ctx, m); err == nil {
		t.Error("a publish to rhizon.in.2 on a 2-shard node was stored")
	}
	// Larger than any command (1 MiB payload, as protojson) can be, and
	// smaller than the server's max_payload.
	big := nats.NewMsg(stream.IngressSubject(0))
	big.Data = bytes.Repeat([]byte("x"), 3<<20)
	if _, err := e.js.PublishMsg(ctx, big); err == nil {
		t.Error("a 3 MiB message was stored on the ingress stream")
	}
	if n := e.streamMsgs(t, stream.IngressStream); n != 0 {
		t.Errorf("ingress stream holds %d messages, want none", n)
	}
}

// A junk body is not copied whole into the dead letters: a bounded prefix,
// with its size and digest.
func TestIngress_DeadLetterKeepsABoundedPrefix(t *testing.T) {
	e := startEnv(t, 1, nil)
	junk := bytes.Repeat([]byte{0xff}, 1<<20)
	m := nats.NewMsg(stream.IngressSubject(0))
	m.Data = junk
	m.Header.Set(stream.HeaderAuthorization, "Bearer "+producerToken)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "dead letter", func() (bool, string) {
		n := e.streamMsgs(t, stream.DeadStream)
		return n == 1, fmt.Sprintf("%d dead letters", n)
	})
	s, err := e.js.Stream(context.Background(), stream.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(junk)
	if len(dl.Data) > stream.DeadLetterMaxBody || !bytes.HasPrefix(junk, dl.Data) || len(dl.Data) == 0 {
		t.Errorf("dead letter body %d bytes, want a prefix of at most %d", len(dl.Data), stream.DeadLetterMaxBody)
	}
	if got := dl.Header.Get(stream.HeaderSize); got != fmt.Sprint(len(junk)) {
		t.Errorf("%s %q, want %d", stream.HeaderSize, got, len(junk))
	}
	if got, want := dl.Header.Get(stream.HeaderDigest), "sha256="+hex.EncodeToString(sum[:]); got != want {
		t.Errorf("%s %q, want %q", stream.HeaderDigest, got, want)
	}
}

// Issue 24 item 13: the Bearer scheme is case-insensitive, as on HTTP.
// Issue 27: a command without tenant and workspace gets the token's default
// scope, as on the gateway.
func TestIngress_BearerAnyCaseAndTheTokensDefaultScope(t *testing.T) {
	e := startEnv(t, 1, nil)
	c := addCmd("scoped", "s1")
	c.Address.Tenant, c.Address.Workspace = "", ""
	data, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(stream.IngressSubject(0))
	m.Data = data
	m.Header.Set(stream.HeaderAuthorization, "bearer "+producerToken)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the command applied in t/w", func() (bool, string) {
		v, _ := e.counter(t, "scoped")
		if n := e.streamMsgs(t, stream.DeadStream); n > 0 {
			s, _ := e.js.Stream(context.Background(), stream.DeadStream)
			dl, _ := s.GetMsg(context.Background(), 1)
			t.Fatalf("dead-lettered: %s", dl.Header.Get(stream.HeaderReason))
		}
		return v == 1, fmt.Sprintf("value %d", v)
	})
}

func TestFillScope(t *testing.T) {
	sec := actor.Security{Scopes: []actor.Scope{{Tenant: "a", Workspace: "*"}, {Tenant: "b", Workspace: "ops"}}}
	for _, tc := range []struct{ in, want actor.Address }{
		{actor.Address{}, actor.Address{Tenant: "a", Workspace: "default"}},
		{actor.Address{Tenant: "b"}, actor.Address{Tenant: "b", Workspace: "ops"}},
		{actor.Address{Tenant: "c"}, actor.Address{Tenant: "c", Workspace: "default"}},
		{actor.Address{Workspace: "x"}, actor.Address{Tenant: "a", Workspace: "x"}},
	} {
		if got := ingress.FillScope(tc.in, sec); got != tc.want {
			t.Errorf("FillScope(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	_ = strings.TrimSpace
}
