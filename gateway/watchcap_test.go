package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/ingress"
)

// Watch streams are capped per token and per connection, with a clear
// ResourceExhausted, and the JetStream consumer of a watch goes when its
// client does, not minutes later (issue 24 item 8). Real embedded NATS.
func TestWatch_CapsAndConsumerCleanup(t *testing.T) {
	e := startAsyncEnvWith(t, func(c *Config) { c.MaxWatchesPerToken, c.MaxWatchesPerConn = 2, 3 })
	consumers := func() int {
		s, err := e.js.Stream(context.Background(), ingress.EventsStream)
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
		ctx, cancel := context.WithCancel(withToken(context.Background(), tok))
		cancels = append(cancels, cancel)
		st, err := e.gw.Watch(ctx, &pb.WatchRequest{Workspace: "w"})
		if err != nil {
			return err
		}
		// A refused watch ends without headers; Recv returns its status.
		if _, err := st.Header(); err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { _, err := st.Recv(); done <- err }()
		select {
		case err := <-done:
			return err
		case <-time.After(300 * time.Millisecond):
			return nil // open and waiting for events
		}
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
	if n := consumers() - base; n != 3 {
		t.Fatalf("%d consumers for 3 open watches", n)
	}
	for _, c := range cancels {
		c()
	}
	checkFor(t, 5*time.Second, func() error {
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
