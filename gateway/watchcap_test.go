package gateway

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/api/stream"
	"github.com/rhizon/rhizon/internal/testkit"
)

// Watch streams are capped per token and per connection, with a clear
// ResourceExhausted, and the JetStream consumer of a watch goes when its
// client does, not minutes later (issue 24 item 8). Real embedded NATS.
func TestWatch_CapsAndConsumerCleanup(t *testing.T) {
	e := startAsyncEnvWith(t, func(c *Config) { c.MaxWatchesPerToken, c.MaxWatchesPerConn = 2, 3 })
	consumers := func() int {
		s, err := e.js.Stream(context.Background(), stream.EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	base := consumers()

	var cancels []context.CancelFunc
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	open := func(tok string) error {
		// Bounded: a watch that never sent its headers fails the test
		// (DeadlineExceeded) instead of hanging it.
		ctx, cancel := context.WithTimeout(withToken(context.Background(), tok), time.Minute)
		cancels = append(cancels, cancel)
		st, err := e.gw.Watch(ctx, &pb.WatchRequest{Workspace: "w"})
		if err != nil {
			return err
		}
		// Watch sends headers once it accepts the request; a refused watch
		// ends without them (Header answers none) and Recv returns its
		// status. No quiet period to wait out.
		md, err := st.Header()
		if err != nil {
			return err
		}
		if md == nil {
			_, err := st.Recv()
			return err
		}
		return nil // open and waiting for events
	}
	for i := range 2 {
		if err := open(tokAlice); err != nil {
			t.Fatalf("watch %d of the token: %v", i+1, err)
		}
	}
	err := open(tokAlice)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "2 Watch streams open") || !strings.Contains(st.Message(), "per token") {
		t.Fatalf("third watch of one token: %v %q, want ResourceExhausted naming the per-token limit", st.Code(), st.Message())
	}
	if err := open(tokOps); err != nil {
		t.Fatalf("another token's watch on the same connection: %v", err)
	}
	err = open(tokSystem)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "per connection") {
		t.Fatalf("fourth watch on one connection: %v %q, want ResourceExhausted naming the per-connection limit", st.Code(), st.Message())
	}
	// A watch creates its consumer after it sent its headers.
	testkit.EventuallyNil(t, 5*time.Second, "a consumer per open watch", func() error {
		if n := consumers() - base; n != 3 {
			return fmt.Errorf("%d consumers for 3 open watches", n)
		}
		return nil
	})
	for _, c := range cancels {
		c()
	}
	testkit.EventuallyNil(t, 5*time.Second, "closed watches' consumers gone", func() error {
		if n := consumers() - base; n != 0 {
			return fmt.Errorf("%d consumers of closed watches remain", n)
		}
		return nil
	})
	// The slots were given back.
	if err := open(tokAlice); err != nil {
		t.Fatalf("a watch after the others closed: %v", err)
	}
}

// A watch ends with Unauthenticated once its token is removed from the token
// file (or expires): a long-lived stream must not outlive its credential.
func TestWatch_EndsWhenTokenGoes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens.json")
	writeTokens(t, p, `{"tokens":[`+
		`{"token":"watcher-token-0123456789","principal":{"id":"w","type":"user"},"scopes":[{"tenant":"acme","workspace":"*"}]},`+
		`{"token":"other-token-0123456789","principal":{"id":"o","type":"user"},"scopes":[{"tenant":"acme","workspace":"*"}]}]}`)
	a, err := LoadTokenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, func(c *Config) { c.Auth, c.Async, c.WatchRecheck = a, &scriptedAsync{}, 20*time.Millisecond })
	ctx, cancel := context.WithTimeout(withToken(context.Background(), "watcher-token-0123456789"), 20*time.Second)
	defer cancel()
	st, err := h.gw.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	writeTokens(t, p, tokenFileOf("other-token-0123456789", "o"))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	if s := status.Convert(err); s.Code() != codes.Unauthenticated || !strings.Contains(s.Message(), "unknown token") {
		t.Fatalf("watch after its token was removed: %v %q, want Unauthenticated", s.Code(), s.Message())
	}
}
