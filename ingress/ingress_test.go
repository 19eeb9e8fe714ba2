package ingress_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/cluster"
	"github.com/rhizon/rhizon/engine"
	"github.com/rhizon/rhizon/ingress"
	"github.com/rhizon/rhizon/internal/ingresstest"
	"github.com/rhizon/rhizon/internal/testkit"
)

const producerToken = "producer-token"

var producer = actor.Security{
	Principal: actor.Principal{ID: "producer", Type: actor.PrincipalService},
	Scopes:    []actor.Scope{{Tenant: "t", Workspace: "w"}},
}

// env is one real node (Raft, Badger on disk) with a real embedded NATS
// server and the ingress manager over them.
type env struct {
	node *cluster.Node
	js   jetstream.JetStream
}

func startEnv(t testing.TB, shards uint32, tune func(*ingress.Config)) *env {
	t.Helper()
	return startEnvWith(t, ingresstest.Options{Shards: shards}, tune)
}

// startEnvWith is startEnv with more of the node's options.
func startEnvWith(t testing.TB, o ingresstest.Options, tune func(*ingress.Config)) *env {
	t.Helper()
	o.Tune = func(c *ingress.Config) {
		c.Authenticate = func(tok string) (actor.Security, error) {
			if tok != producerToken {
				return actor.Security{}, fmt.Errorf("unknown token")
			}
			return producer, nil
		}
		if tune != nil {
			tune(c)
		}
	}
	e := ingresstest.Start(t, o)
	return &env{node: e.Node, js: e.JS}
}

func addCmd(entity, key string) *pb.Command {
	return &pb.Command{
		Type:           "cmd.counter.add",
		Address:        &pb.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityId: entity},
		Payload:        []byte(`{"amount":1}`),
		IdempotencyKey: key,
	}
}

// publish sends a command as an external producer would: protobuf body and
// a bearer token, no JetStream message id (so a second publish is stored
// again and only the engine's idempotency can tell).
func (e *env) publish(t testing.TB, c *pb.Command) jetstream.PubAckFuture {
	t.Helper()
	data, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(stream.IngressSubject(e.node.ShardOf(c.Address.ToActor())))
	m.Data = data
	m.Header.Set(stream.HeaderAuthorization, "Bearer "+producerToken)
	f, err := e.js.PublishMsgAsync(m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// awaitAcks waits for the stream's ack of every publish.
func awaitAcks(t testing.TB, futures []jetstream.PubAckFuture) {
	t.Helper()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("publish not acked")
		}
	}
}

func (e *env) counter(t *testing.T, entity string) (value int64, version uint64) {
	t.Helper()
	addr := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: entity}
	ent, _, err := e.node.Get(context.Background(), addr, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ent.State) == 0 {
		return 0, ent.Version
	}
	var st struct{ Value int64 }
	if err := json.Unmarshal(ent.State, &st); err != nil {
		t.Fatal(err)
	}
	return st.Value, ent.Version
}

func (e *env) streamInfo(t testing.TB, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func (e *env) streamMsgs(t testing.TB, name string) uint64 {
	t.Helper()
	return e.streamInfo(t, name).State.Msgs
}

// 10,000 commands through JetStream, 10% of them published twice: each is
// applied once, and the events stream holds exactly one event per accepted
// command (counter add emits one event).
func TestIngress_TenThousandCommandsExactlyOnce(t *testing.T) {
	e := startEnv(t, 4, nil)
	const n, entities = 10000, 500
	start := time.Now()
	var futures []jetstream.PubAckFuture
	for i := range n {
		c := addCmd(fmt.Sprintf("e%d", i%entities), fmt.Sprintf("k%d", i))
		futures = append(futures, e.publish(t, c))
		if i%10 == 0 {
			futures = append(futures, e.publish(t, c)) // the duplicate
		}
		if i%1000 == 999 {
			<-e.js.PublishAsyncComplete()
		}
	}
	awaitAcks(t, futures)
	published := time.Since(start)
	testkit.Eventually(t, 90*time.Second, "all commands applied", func() (bool, string) {
		var sum int64
		for i := range entities {
			v, _ := e.counter(t, fmt.Sprintf("e%d", i))
			sum += v
		}
		return sum == n, fmt.Sprintf("sum %d of %d", sum, n)
	})
	applied := time.Since(start)
	t.Logf("ingress: %d commands (+%d duplicates) published in %v, all applied after %v: %.0f commands/s",
		n, n/10, published.Round(time.Millisecond), applied.Round(time.Millisecond), float64(n)/applied.Seconds())
	for i := range entities {
		if v, ver := e.counter(t, fmt.Sprintf("e%d", i)); v != n/entities || ver != uint64(n/entities) {
			t.Fatalf("entity e%d: value %d version %d, want %d", i, v, ver, n/entities)
		}
	}
	testkit.Eventually(t, 30*time.Second, "events published", func() (bool, string) {
		m := e.streamMsgs(t, stream.EventsStream)
		return m >= n, fmt.Sprintf("%d events", m)
	})
	testkit.Eventually(t, 30*time.Second, "ingress drained", func() (bool, string) {
		m := e.streamMsgs(t, stream.IngressStream)
		return m == 0, fmt.Sprintf("%d messages left", m)
	})
	// A relay that republished would show within this window.
	testkit.Consistently(t, 300*time.Millisecond, "no event republished", func() (bool, string) {
		m := e.streamMsgs(t, stream.EventsStream)
		return m == n, fmt.Sprintf("events stream holds %d events, want %d", m, n)
	})
	if m := e.streamMsgs(t, stream.DeadStream); m != 0 {
		t.Fatalf("%d dead letters, want none", m)
	}
}

// A message that keeps failing (an actor type this node does not have) is
// dead-lettered with its reason after MaxDeliver deliveries; a malformed one
// at once; neither holds up the commands behind it on the same shard.
func TestIngress_PoisonAndMalformedGoToDeadLetters(t *testing.T) {
	e := startEnv(t, 1, func(c *ingress.Config) {
		c.MaxDeliver = 3
		c.Backoff = []time.Duration{200 * time.Millisecond}
	})
	poison := addCmd("p", "poison")
	poison.Type, poison.Address.ActorType = "cmd.nosuch.add", "nosuch"
	e.publish(t, poison)
	bad := nats.NewMsg(stream.IngressSubject(0))
	bad.Data = []byte("\xff\xfe not a command")
	bad.Header.Set(stream.HeaderAuthorization, "Bearer "+producerToken)
	if _, err := e.js.PublishMsg(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	forged := addCmd("f", "forged") // signed with a key the cluster does not have
	data, _ := proto.Marshal(forged)
	fm := nats.NewMsg(stream.IngressSubject(0))
	fm.Data = data
	fm.Header.Set(stream.HeaderSignature, strings.Repeat("ab", 32))
	if _, err := e.js.PublishMsg(context.Background(), fm); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		e.publish(t, addCmd("good", fmt.Sprintf("g%d", i)))
	}
	var goodDone atomic.Int64
	testkit.Eventually(t, 20*time.Second, "commands behind the poison applied", func() (bool, string) {
		v, _ := e.counter(t, "good")
		goodDone.Store(v)
		return v == 100, fmt.Sprintf("good=%d", v)
	})
	testkit.Eventually(t, 20*time.Second, "three dead letters", func() (bool, string) {
		m := e.streamMsgs(t, stream.DeadStream)
		return m == 3, fmt.Sprintf("%d dead letters", m)
	})
	s, err := e.js.Stream(context.Background(), stream.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		reasons[m.Header.Get(stream.HeaderReason)] = m.Header.Get(stream.HeaderKind)
		if m.Subject != stream.DeadSubject(0) || m.Header.Get(stream.HeaderSource) == "" {
			t.Fatalf("dead letter %d: subject %s source %q", seq, m.Subject, m.Header.Get(stream.HeaderSource))
		}
	}
	want := map[string]string{ // reason prefix -> kind
		`actor type "nosuch" is not known on this node (after 3 deliveries)`: "poison",
		"malformed: ": "rejected",
		"unauthenticated: bad " + stream.HeaderSignature: "rejected",
	}
	for prefix, kind := range want {
		found := false
		for r, k := range reasons {
			if strings.HasPrefix(r, prefix) && k == kind {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s dead letter with reason %q; have %v", kind, prefix, reasons)
		}
	}
	if v, _ := e.counter(t, "f"); v != 0 {
		t.Fatalf("forged command applied: f=%d", v)
	}
	testkit.Eventually(t, 10*time.Second, "ingress drained", func() (bool, string) {
		m := e.streamMsgs(t, stream.IngressStream)
		return m == 0, fmt.Sprintf("%d left", m)
	})
}

// The ingress and events streams dedupe message ids over the configured
// window: long enough for a new leader's republishing and producers'
// retries, short enough that the ids held stay small.
func TestIngress_StreamsUseTheDuplicateWindow(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  time.Duration
		want time.Duration
	}{
		{"default", 0, ingress.DefaultDuplicateWindow},
		{"configured", 45 * time.Second, 45 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, 1, func(c *ingress.Config) { c.DuplicateWindow = tc.set })
			for _, name := range []string{stream.IngressStream, stream.EventsStream} {
				if got := e.streamInfo(t, name).Config.Duplicates; got != tc.want {
					t.Errorf("stream %s: duplicate window %v, want %v", name, got, tc.want)
				}
			}
		})
	}
}

// An event the stream already has (what a new leader republishes after a
// failover) is dropped and the others are stored once, in version order. To
// a replicated stream the relay publishes events in atomic batches: a batch
// holding the stored id is refused whole, and the relay then publishes its
// events one by one. To a stream of one replica it publishes them one by one
// from the start.
func TestIngress_RelayPublishesAroundAnEventAlreadyStored(t *testing.T) {
	t.Run("one replica", func(t *testing.T) { testRelayAroundStoredEvent(t, startEnv(t, 1, nil)) })
	t.Run("three replicas", func(t *testing.T) {
		e := ingresstest.Start(t, ingresstest.Options{Shards: 1, NATSURLs: ingress.StartNATSCluster(t)})
		testRelayAroundStoredEvent(t, &env{node: e.Node, js: e.JS})
	})
}

func testRelayAroundStoredEvent(t *testing.T, e *env) {
	ctx := context.Background()
	addr := actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "dup"}
	const n, stored = 6, 3
	// The stream already holds version 3's event, as if an earlier leader
	// had published it.
	pre := nats.NewMsg(stream.EventSubject(addr))
	pre.Data = []byte("published before")
	if _, err := e.js.PublishMsg(ctx, pre, jetstream.WithMsgID(engine.EventID(addr, stored))); err != nil {
		t.Fatal(err)
	}
	// Versions 1-2 may be relayed before the rest is applied; versions 3-6
	// are applied in one entry, so one batch holds the stored id.
	submit := func(i int) {
		t.Helper()
		res, err := e.node.Submit(ctx, actor.Command{
			ID: fmt.Sprintf("c%d", i), Type: "cmd.counter.add", Address: addr, Payload: []byte(`{"amount":1}`),
			IdempotencyKey: fmt.Sprintf("k%d", i), Security: producer,
		})
		if err != nil || res.Status != actor.StatusAccepted {
			t.Fatalf("submit %d: %+v %v", i, res, err)
		}
	}
	submit(1)
	submit(2)
	var wg sync.WaitGroup
	for i := 3; i <= n; i++ {
		wg.Go(func() { submit(i) })
	}
	wg.Wait()
	testkit.Eventually(t, 30*time.Second, "events relayed", func() (bool, string) {
		m := e.streamMsgs(t, stream.EventsStream)
		return m >= n, fmt.Sprintf("%d of %d messages", m, n)
	})
	// A relay that republished would show within this window.
	testkit.Consistently(t, 300*time.Millisecond, "one message per version", func() (bool, string) {
		m := e.streamMsgs(t, stream.EventsStream)
		return m == n, fmt.Sprintf("events stream holds %d messages, want %d", m, n)
	})
	s, err := e.js.Stream(ctx, stream.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	var versions []uint64
	for seq := uint64(1); seq <= n; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		id := raw.Header.Get(jetstream.MsgIDHeader)
		if seq == 1 {
			if string(raw.Data) != "published before" {
				t.Fatalf("first message %q, want the one published before", raw.Data)
			}
			continue
		}
		var ev pb.Event
		if err := proto.Unmarshal(raw.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if id != engine.EventID(addr, ev.Version) {
			t.Fatalf("message %d: id %q is not event version %d's", seq, id, ev.Version)
		}
		versions = append(versions, ev.Version)
	}
	if want := []uint64{1, 2, 4, 5, 6}; fmt.Sprint(versions) != fmt.Sprint(want) {
		t.Fatalf("relayed versions %v, want %v", versions, want)
	}
}
