package gateway

import (
	"context"
	"crypto/sha256"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Default Watch caps. A watch costs about 0.9 MB and 3 goroutines on the
// node plus a JetStream consumer; 64 per token lets an application watch
// per workspace or per actor type, and 32 per connection is about what one
// HTTP/2 connection carries before its streams queue anyway.
const (
	DefaultWatchesPerToken = 64
	DefaultWatchesPerConn  = 32
)

// watchCounts counts the open Watch streams per token and per client
// connection on this node.
type watchCounts struct {
	perToken, perConn int

	mu      sync.Mutex
	byToken map[[sha256.Size]byte]int
	byConn  map[string]int
}

func newWatchCounts(perToken, perConn int) watchCounts {
	if perToken <= 0 {
		perToken = DefaultWatchesPerToken
	}
	if perConn <= 0 {
		perConn = DefaultWatchesPerConn
	}
	return watchCounts{perToken: perToken, perConn: perConn, byToken: map[[sha256.Size]byte]int{}, byConn: map[string]int{}}
}

// connKey carries the HTTP client connection's remote address; a gRPC call
// has its peer instead.
type connKey struct{}

// watchConn names the client connection of ctx: its remote address, which
// is unique per open connection on this node.
func watchConn(ctx context.Context) string {
	if c, ok := ctx.Value(connKey{}).(string); ok {
		return "http " + c
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return "grpc " + p.Addr.String()
	}
	return ""
}

// acquire takes a slot for a watch of id on ctx's connection, or answers
// ResourceExhausted naming the limit reached. release gives it back.
func (w *watchCounts) acquire(ctx context.Context, id Identity) (release func(), err error) {
	conn := watchConn(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := w.byToken[id.tokenHash]; n >= w.perToken {
		return nil, status.Errorf(codes.ResourceExhausted,
			"principal %s's token has %d Watch streams open on this node, the limit per token (--watch-max-per-token); close one, or watch a wider filter instead of several narrow ones",
			id.Principal.ID, n)
	}
	if n := w.byConn[conn]; conn != "" && n >= w.perConn {
		return nil, status.Errorf(codes.ResourceExhausted,
			"this connection has %d Watch streams open, the limit per connection (--watch-max-per-conn); close one or open another connection",
			n)
	}
	w.byToken[id.tokenHash]++
	if conn != "" {
		w.byConn[conn]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.byToken[id.tokenHash]--; w.byToken[id.tokenHash] <= 0 {
				delete(w.byToken, id.tokenHash)
			}
			if conn != "" {
				if w.byConn[conn]--; w.byConn[conn] <= 0 {
					delete(w.byConn, conn)
				}
			}
		})
	}, nil
}
