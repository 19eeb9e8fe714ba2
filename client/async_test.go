package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizon/rhizon/actor"
	pb "github.com/rhizon/rhizon/api/rhizonv1"
	"github.com/rhizon/rhizon/gateway"
	"github.com/rhizon/rhizon/ingress"
)

// scriptedAsync is a gateway.AsyncBackend: Enqueue follows enqueue, and
// Watch follows watch; both record what they were called with.
type scriptedAsync struct {
	mu      sync.Mutex
	cmds    []actor.Command
	filters []ingress.WatchFilter
	enqueue func(n int, cmd actor.Command) (ingress.Enqueued, error)
	watch   func(n int, ctx context.Context, f ingress.WatchFilter, fn func(*pb.Event, uint64) error) error
}

func (s *scriptedAsync) Enqueue(_ context.Context, cmd actor.Command) (ingress.Enqueued, error) {
	s.mu.Lock()
	s.cmds = append(s.cmds, cmd)
	n := len(s.cmds)
	s.mu.Unlock()
	return s.enqueue(n, cmd)
}

func (s *scriptedAsync) Watch(ctx context.Context, f ingress.WatchFilter, fn func(*pb.WatchEvent) error) error {
	s.mu.Lock()
	s.filters = append(s.filters, f)
	n := len(s.filters)
	s.mu.Unlock()
	return s.watch(n, ctx, f, func(ev *pb.Event, seq uint64) error {
		return fn(&pb.WatchEvent{Event: ev, Sequence: seq})
	})
}

func (s *scriptedAsync) calls() ([]actor.Command, []ingress.WatchFilter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]actor.Command(nil), s.cmds...), append([]ingress.WatchFilter(nil), s.filters...)
}

// serveAsync is serve with an async backend behind the gateway.
func serveAsync(t *testing.T, async *scriptedAsync) string {
	t.Helper()
	be, _ := serve(t, nil)
	auth, err := gateway.NewAuth("test", []gateway.TokenEntry{{
		Token: token, Principal: gateway.TokenPrincipal{ID: "dev", Type: "user"},
		Scopes: []gateway.TokenScope{{Tenant: "dev", Workspace: "*"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := gateway.New(gateway.Config{Backend: be, Auth: auth, Async: async, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gateway.ServerOptions()...)
	srv.RegisterGRPC(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(func() {
		srv.Shutdown()
		gs.Stop()
	})
	return lis.Addr().String()
}

// TestSubmitAsyncRetriesWithSameKey: two enqueues with an unknown outcome,
// then a duplicate (the first had been stored). Every attempt carries one key
// and one command id.
func TestSubmitAsyncRetriesWithSameKey(t *testing.T) {
	async := &scriptedAsync{enqueue: func(n int, _ actor.Command) (ingress.Enqueued, error) {
		if n <= 2 {
			return ingress.Enqueued{}, fmt.Errorf("ingress: publish: %w", context.DeadlineExceeded)
		}
		return ingress.Enqueued{Stream: "RHIZON_INGRESS", Sequence: 7, Duplicate: true, Shard: 1}, nil
	}}
	c := dial(t, serveAsync(t, async), WithTenant("dev"), WithWorkspace("w1"))
	req := addReq()
	resp, err := c.SubmitAsync(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetDuplicate() || resp.GetSequence() != 7 || resp.GetCommandId() != req.CommandId {
		t.Fatalf("response %v", resp)
	}
	cmds, _ := async.calls()
	if len(cmds) != 3 {
		t.Fatalf("%d attempts, want 3", len(cmds))
	}
	for i, cmd := range cmds {
		if cmd.IdempotencyKey != req.IdempotencyKey || cmd.ID != req.CommandId || cmd.Address.Tenant != "dev" || cmd.Address.Workspace != "w1" {
			t.Fatalf("attempt %d: key %q id %q address %+v; req has key %q id %q", i+1, cmd.IdempotencyKey, cmd.ID, cmd.Address, req.IdempotencyKey, req.CommandId)
		}
	}
}

var errEnough = errors.New("enough")

// TestWatchResumesAfterTheLastSequence: the first stream breaks after three
// events; the client reopens it after the third and fn sees all ten once,
// in order.
func TestWatchResumesAfterTheLastSequence(t *testing.T) {
	async := &scriptedAsync{watch: func(n int, ctx context.Context, f ingress.WatchFilter, fn func(*pb.Event, uint64) error) error {
		start := f.After + 1
		if f.After == 0 && !f.FromBeginning {
			return errors.New("test expects from_beginning or after_sequence")
		}
		for seq := start; seq <= 10; seq++ {
			if n == 1 && seq == 4 {
				return errors.New("events stream lost its leader")
			}
			if err := fn(&pb.Event{Id: fmt.Sprint("e", seq), Version: seq}, seq*10); err != nil {
				return err
			}
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	// The fake's sequences are 10, 20...; map them back to 1, 2... for After.
	inner := async.watch
	async.watch = func(n int, ctx context.Context, f ingress.WatchFilter, fn func(*pb.Event, uint64) error) error {
		f.After /= 10
		return inner(n, ctx, f, fn)
	}
	c := dial(t, serveAsync(t, async), WithWorkspace("w1"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []uint64
	err := c.Watch(ctx, &pb.WatchRequest{ActorType: "counter", FromBeginning: true}, func(ev *pb.WatchEvent) error {
		got = append(got, ev.GetSequence())
		if len(got) == 10 {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("Watch returned %v, want fn's error", err)
	}
	for i, seq := range got {
		if seq != uint64(i+1)*10 {
			t.Fatalf("events %v, want 10, 20 ... 100 once each", got)
		}
	}
	_, filters := async.calls()
	if len(filters) != 2 {
		t.Fatalf("%d streams, want 2", len(filters))
	}
	first, second := filters[0], filters[1]
	if !first.FromBeginning || first.After != 0 || first.Tenant != "dev" || first.Workspace != "w1" || first.ActorType != "counter" {
		t.Fatalf("first stream's filter %+v", first)
	}
	if second.FromBeginning || second.After != 30 || second.Workspace != "w1" || second.ActorType != "counter" {
		t.Fatalf("resumed stream's filter %+v, want after 30 and not from the beginning", second)
	}
}

func TestWatchDoesNotRetryRefusals(t *testing.T) {
	async := &scriptedAsync{watch: func(int, context.Context, ingress.WatchFilter, func(*pb.Event, uint64) error) error {
		t.Error("a refused watch reached the backend")
		return nil
	}}
	c := dial(t, serveAsync(t, async))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Watch(ctx, &pb.WatchRequest{Tenant: "other"}, func(*pb.WatchEvent) error { return nil })
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("watch of another tenant: %v", err)
	}
	err = c.Watch(ctx, &pb.WatchRequest{EntityId: "c1"}, func(*pb.WatchEvent) error { return nil })
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("entity without actor type: %v", err)
	}

	// A gateway that cannot be reached is retried as often as configured.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	start := time.Now()
	err = dial(t, dead, WithRetries(2)).Watch(ctx, &pb.WatchRequest{}, func(*pb.WatchEvent) error { return nil })
	if status.Code(err) != codes.Unavailable || time.Since(start) > 5*time.Second {
		t.Fatalf("watch of a closed port: %v after %v", err, time.Since(start))
	}

	// Canceling ends a quiet watch with the context's error.
	quiet := &scriptedAsync{watch: func(_ int, ctx context.Context, _ ingress.WatchFilter, _ func(*pb.Event, uint64) error) error {
		<-ctx.Done()
		return ctx.Err()
	}}
	qctx, qcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer qcancel()
	if err := dial(t, serveAsync(t, quiet)).Watch(qctx, &pb.WatchRequest{}, func(*pb.WatchEvent) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("watch until the deadline: %v", err)
	}
}
