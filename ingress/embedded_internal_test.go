package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testcerts"
	"github.com/rhizon/rhizon/internal/testkit"
	"github.com/rhizon/rhizon/natsserver"
)

// asyncErrors collects a connection's asynchronous errors, where NATS
// reports permission violations.
type asyncErrors struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err.Error())
}

// violated waits up to 5 s for a permissions violation naming subject.
func (a *asyncErrors) violated(t *testing.T, subject string) {
	t.Helper()
	testkit.Poll{Timeout: 5 * time.Second, Every: 20 * time.Millisecond}.Eventually(t, "permissions violation for "+subject, func() (bool, string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, e := range a.errs {
			if strings.Contains(e, "Permissions Violation") && strings.Contains(e, subject) {
				return true, ""
			}
		}
		return false, fmt.Sprint("errors ", a.errs)
	})
}

// An embedded server with a cluster secret has NATS accounts (issue 24): a
// producer connects with its bearer token, lands in an account of its own,
// and may publish commands and read its own acknowledgements, nothing else.
// Its commands carry its token's identity; its message ids dedupe only its
// own messages; it sees nothing of another producer's (no shared _INBOX.>);
// its connections are limited; a subject no shard consumes is refused.
// Nobody connects without credentials. The node credentials may do anything.
func TestEmbedded_ProducersHaveAccountsOfTheirOwn(t *testing.T) {
	const secret = "s3cret"
	const tokA, tokB = "producer-a-token-0123456789", "producer-b-token-0123456789"
	ns, err := natsserver.StartEmbedded(natsserver.EmbeddedConfig{ServerName: "s", Addr: "127.0.0.1:0", StoreDir: t.TempDir(), ClusterSecret: secret,
		ProducerTokens: []string{tokA, tokB}, ProducerLimits: natsserver.ProducerLimits{MaxConnections: 3}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	user, pass := natsserver.NodeCredentials(secret)
	node, err := nats.Connect(ns.ClientURL(), nats.UserInfo(user, pass), nats.CustomInboxPrefix(stream.NodeInboxPrefix))
	if err != nil {
		t.Fatalf("node credentials: %v", err)
	}
	t.Cleanup(node.Close)
	sh := &appliedShard{id: 0, keys: map[string]bool{}}
	secs := map[string]actor.Security{}
	for tok, p := range map[string]string{tokA: "a", tokB: "b"} {
		secs[tok] = actor.Security{Principal: actor.Principal{ID: p, Type: actor.PrincipalService},
			Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}
	}
	startManager(t, Config{Conn: node, Replicas: 1, Registry: builtin.Registry(),
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return []Shard{sh} },
		ProducerTokens: []string{tokA, tokB},
		Authenticate: func(tok string) (actor.Security, error) {
			if s, ok := secs[tok]; ok {
				return s, nil
			}
			return actor.Security{}, errors.New("unknown token")
		}}, 30*time.Second)

	for name, opt := range map[string]nats.Option{
		"no credentials":      func(*nats.Options) error { return nil },
		"an unknown token":    nats.Token("not-a-token-of-this-cluster"),
		"a wrong node secret": nats.UserInfo(user, "wrong"),
	} {
		if nc, err := nats.Connect(ns.ClientURL(), opt); err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		}
	}

	errs := &asyncErrors{}
	a, err := nats.Connect(ns.ClientURL(), nats.Token(tokA), nats.ErrorHandler(errs.handler))
	if err != nil {
		t.Fatalf("producer A with its token: %v", err)
	}
	t.Cleanup(a.Close)
	// The token as the password works too (for tools that only take
	// user:password URLs).
	b, err := nats.Connect(strings.Replace(ns.ClientURL(), "nats://", "nats://b:"+tokB+"@", 1))
	if err != nil {
		t.Fatalf("producer B with its token as the password: %v", err)
	}
	t.Cleanup(b.Close)
	// Everything that reaches A's _INBOX.>.
	var seenMu sync.Mutex
	var seen []*nats.Msg
	if _, err := a.Subscribe("_INBOX.>", func(m *nats.Msg) {
		seenMu.Lock()
		seen = append(seen, m)
		seenMu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	jsA, _ := jetstream.New(a)
	jsB, _ := jetstream.New(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A publishes first with the message id B will use: B's is stored all
	// the same, and each command carries its own producer's identity.
	cmdA := ingressMsg(t, 0, "ea", "ka")
	cmdA.Header.Set(stream.HeaderAuthorization, "bearer "+tokA) // its own token may be named, in any case
	if _, err := jsA.PublishMsg(ctx, cmdA, jetstream.WithMsgID("order-1")); err != nil {
		t.Fatalf("producer A publishes a command: %v", err)
	}
	cmdB := ingressMsg(t, 0, "eb", "kb")
	cmdB.Header.Del(stream.HeaderAuthorization) // the connection's token is enough
	ackB, err := jsB.PublishMsg(ctx, cmdB, jetstream.WithMsgID("order-1"))
	if err != nil {
		t.Fatalf("producer B publishes a command: %v", err)
	}
	if ackB.Duplicate || ackB.Stream != stream.ProducerStream(stream.ProducerAccount(tokB)) {
		t.Fatalf("B's publish: %+v; want stored on its own stream, not a duplicate of A's", ackB)
	}
	for _, want := range []struct{ key, principal string }{{"ka", "a"}, {"kb", "b"}} {
		testkit.Poll{Timeout: 10 * time.Second, Every: 20 * time.Millisecond}.Eventually(t, "command "+want.key+" applied", func() (bool, string) {
			_, ok := sh.command(want.key)
			return ok, "not yet"
		})
		if c, _ := sh.command(want.key); c.Security.Principal.ID != want.principal {
			t.Errorf("command %s applied as %q, want %q", want.key, c.Security.Principal.ID, want.principal)
		}
	}
	// A cannot borrow B's token in the header.
	borrowed := ingressMsg(t, 0, "ea", "borrowed")
	borrowed.Header.Set(stream.HeaderAuthorization, "Bearer "+tokB)
	if _, err := jsA.PublishMsg(ctx, borrowed); err != nil {
		t.Fatal(err)
	}
	njs, err := jetstream.New(node)
	if err != nil {
		t.Fatal(err)
	}
	deadStream, err := njs.Stream(ctx, stream.DeadStream)
	if err != nil {
		t.Fatal(err)
	}
	var dl *jetstream.RawStreamMsg
	testkit.Poll{Timeout: 10 * time.Second, Every: 20 * time.Millisecond}.EventuallyNil(t, "the command with B's token in A's header dead-lettered", func() error {
		var err error
		dl, err = deadStream.GetLastMsgForSubject(ctx, stream.DeadSubject(0))
		return err
	})
	if r := dl.Header.Get(stream.HeaderReason); !strings.Contains(r, "another token") {
		t.Fatalf("dead letter reason %q", r)
	}
	if sh.applied("borrowed") {
		t.Fatal("A's command with B's token in the header was applied")
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	seenMu.Lock()
	for _, m := range seen {
		if bytes.Equal(m.Data, cmdB.Data) || bytes.Contains(m.Data, []byte(stream.ProducerStream(stream.ProducerAccount(tokB)))) ||
			m.Header.Get(stream.HeaderAuthorization) != "" {
			t.Errorf("producer B's command or acknowledgement (subject %s) reached producer A", m.Subject)
		}
	}
	seenMu.Unlock()

	// A subject no shard consumes (this node has one shard) is refused.
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if _, err := jsA.PublishMsg(short, ingressMsg(t, 1, "ea", "k-unconsumed")); err == nil {
		t.Error("a publish to rhizon.in.1 on a one-shard node was stored")
	}

	// Denied: reading events, the node's inboxes, the ingress subjects;
	// forging events; the JetStream API.
	for _, subj := range []string{"rhizon.evt.>", stream.NodeInboxPrefix + ".>", stream.IngressSubject(0)} {
		if _, err := a.Subscribe(subj, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		errs.violated(t, subj)
	}
	forged := stream.EventSubject(actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "e1"})
	if err := a.Publish(forged, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	errs.violated(t, forged)
	short2, cancelShort2 := context.WithTimeout(ctx, time.Second)
	defer cancelShort2()
	if err := jsA.DeleteStream(short2, stream.EventsStream); err == nil {
		t.Fatal("a producer deleted the events stream")
	}
	errs.violated(t, "$JS.API.STREAM.DELETE."+stream.EventsStream)

	// Connection limit: A has one connection; two more make three.
	for i := 0; i < 2; i++ {
		nc, err := nats.Connect(ns.ClientURL(), nats.Token(tokA))
		if err != nil {
			t.Fatalf("producer A's connection %d of 3: %v", i+2, err)
		}
		t.Cleanup(nc.Close)
	}
	if nc, err := nats.Connect(ns.ClientURL(), nats.Token(tokA), nats.NoReconnect()); err == nil {
		// The server may close it right after the handshake.
		perr := nc.FlushTimeout(2 * time.Second)
		nc.Close()
		if perr == nil {
			t.Fatal("producer A's fourth connection was accepted (limit 3)")
		}
	}

	// The node's view: the streams intact, no forged event stored.
	for _, name := range []string{stream.IngressStream, stream.EventsStream} {
		st, err := njs.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s after the attempts: %v", name, err)
		}
		if name == stream.EventsStream {
			_, err := st.GetLastMsgForSubject(ctx, forged)
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				t.Fatalf("forged event: %v, want none stored", err)
			}
		}
	}
}

// With TLS, the client port and the routes of three clustered servers are
// TLS: a client that trusts the CA reaches a 3-replica stream (which needs
// the routes), a plaintext client or one trusting another CA is refused.
func TestEmbedded_TLSOnTheClientPortAndRoutes(t *testing.T) {
	certs := testcerts.Write(t)
	servers, urls := startNATSClusterTLS(t, testcerts.Config(t, certs, certs.CA))
	// A route listener speaks TLS from the first byte.
	rc, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", servers[1].ClusterAddr().String(),
		&tls.Config{RootCAs: testcerts.Config(t, certs, certs.CA).RootCAs, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake with a route port: %v", err)
	}
	rc.Close()
	ca := testcerts.Config(t, certs, certs.CA).RootCAs
	nc, err := nats.Connect(urls[0], nats.Secure(&tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TLS", Subjects: []string{"tls.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("3-replica stream over TLS routes: %v", err)
	}
	if _, err := js.Publish(ctx, "tls.x", []byte("x")); err != nil {
		t.Fatalf("publish to the 3-replica stream: %v", err)
	}
	if info, err := st.Info(ctx); err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream replicas: %+v %v, want a leader and 2 replicas", info, err)
	}

	plain := "nats://" + strings.TrimPrefix(urls[0], "tls://")
	if c, err := nats.Connect(plain, nats.Timeout(2*time.Second)); err == nil {
		c.Close()
		t.Fatal("a plaintext client connected to a TLS client port")
	}
	other := testcerts.Config(t, certs, certs.OtherCA).RootCAs
	if c, err := nats.Connect(urls[0], nats.Timeout(2*time.Second), nats.Secure(&tls.Config{RootCAs: other, MinVersion: tls.VersionTLS12})); err == nil {
		c.Close()
		t.Fatal("a client trusting another CA connected")
	}
}
