package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rhizon/rhizon/actor"
	"github.com/rhizon/rhizon/actor/builtin"
	"github.com/rhizon/rhizon/internal/testcerts"
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
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		for _, e := range a.errs {
			if strings.Contains(e, "Permissions Violation") && strings.Contains(e, subject) {
				a.mu.Unlock()
				return
			}
		}
		a.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no permissions violation for %q; errors: %v", subject, a.errs)
}

// An embedded server with a cluster secret lets a client without credentials
// publish commands and get their acknowledgements, and nothing else: it
// cannot read events, see the commands the node pulls (tokens included),
// forge events or touch the streams. The node credentials can.
func TestEmbedded_ClientsWithoutCredentialsMayOnlyPublishCommands(t *testing.T) {
	const secret = "s3cret"
	ns, err := StartEmbedded(EmbeddedConfig{ServerName: "s", Addr: "127.0.0.1:0", StoreDir: t.TempDir(), ClusterSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	user, pass := NodeCredentials(secret)
	node, err := nats.Connect(ns.ClientURL(), nats.UserInfo(user, pass), nats.CustomInboxPrefix(NodeInboxPrefix))
	if err != nil {
		t.Fatalf("node credentials: %v", err)
	}
	t.Cleanup(node.Close)
	sh := &appliedShard{id: 0, keys: map[string]bool{}}
	sec := actor.Security{Principal: actor.Principal{ID: "p", Type: actor.PrincipalService},
		Scopes: []actor.Scope{{Tenant: "t", Workspace: "w"}}}
	startManager(t, Config{Conn: node, Replicas: 1, Registry: builtin.Registry(),
		ShardOf: func(actor.Address) uint32 { return 0 }, Shards: func() []Shard { return []Shard{sh} },
		Authenticate: func(string) (actor.Security, error) { return sec, nil }}, 30*time.Second)

	if _, err := nats.Connect(ns.ClientURL(), nats.UserInfo(user, "wrong")); err == nil {
		t.Fatal("a wrong node password connected")
	}

	errs := &asyncErrors{}
	anon, err := nats.Connect(ns.ClientURL(), nats.ErrorHandler(errs.handler))
	if err != nil {
		t.Fatalf("a client without credentials: %v", err)
	}
	t.Cleanup(anon.Close)
	// Everything that reaches _INBOX.>, which a producer may read.
	var seenMu sync.Mutex
	var seen []*nats.Msg
	if _, err := anon.Subscribe("_INBOX.>", func(m *nats.Msg) {
		seenMu.Lock()
		seen = append(seen, m)
		seenMu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(anon)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Allowed: publish a command, get its acknowledgement, and the node
	// consumes it.
	cmd := ingressMsg(t, 0, "e1", "k1")
	if _, err := js.PublishMsg(ctx, cmd); err != nil {
		t.Fatalf("publish a command without credentials: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); !sh.applied("k1"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node did not consume the command within 10s")
		}
	}
	if err := anon.Flush(); err != nil {
		t.Fatal(err)
	}
	seenMu.Lock()
	for _, m := range seen {
		if bytes.Equal(m.Data, cmd.Data) || m.Header.Get(HeaderAuthorization) != "" {
			t.Errorf("the pulled command (subject %s) reached a producer's _INBOX.> subscription", m.Subject)
		}
	}
	seenMu.Unlock()

	// Denied: reading events (core or JetStream), the nodes' inboxes,
	// forging events, the JetStream API.
	for _, subj := range []string{"rhizon.evt.>", NodeInboxPrefix + ".>", IngressSubject(0)} {
		if _, err := anon.Subscribe(subj, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		errs.violated(t, subj)
	}
	forged := EventSubject(actor.Address{Tenant: "t", Workspace: "w", ActorType: "counter", EntityID: "e1"})
	if err := anon.Publish(forged, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	errs.violated(t, forged)
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if err := js.DeleteStream(short, EventsStream); err == nil {
		t.Fatal("a client without credentials deleted the events stream")
	}
	errs.violated(t, "$JS.API.STREAM.DELETE."+EventsStream)

	// The node's view: both streams intact, no forged event stored.
	njs, err := jetstream.New(node)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{IngressStream, EventsStream} {
		st, err := njs.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s after the attempts: %v", name, err)
		}
		if name == EventsStream {
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
