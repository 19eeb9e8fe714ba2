package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rhizon/rhizon/bench/peer"
)

// PeerKinds are the targets that run on a peer cluster, in the order a
// comparison lists them.
var PeerKinds = []string{"etcd", "jetstream-kv", "jetstream-kv-sync", JetStreamKVSyncNoDirect}

// JetStreamKVSyncNoDirect is jetstream-kv-sync with a bucket that does not
// allow direct gets: w1-occ's read is then answered by the stream's
// leader instead of by any replica (which may not have the last update).
const JetStreamKVSyncNoDirect = "jetstream-kv-sync-nodirect"

// IsPeer tells whether a target name is a peer kind.
func IsPeer(target string) bool { return PeerServerKind(target) != "" }

// PeerServerKind is the kind of servers (one of peer.Kinds) the peer
// target runs on, or "" when target is not a peer.
func PeerServerKind(target string) string {
	switch target {
	case peer.KindEtcd, peer.KindJetStreamKV, peer.KindJetStreamKVSync:
		return target
	case JetStreamKVSyncNoDirect:
		return peer.KindJetStreamKVSync
	}
	return ""
}

// NewPeerTarget returns the target of a peer kind on the servers at cfg.URLs.
func NewPeerTarget(kind string, cfg PeerConfig) (Target, error) {
	switch kind {
	case "etcd":
		return NewEtcd(cfg)
	case "jetstream-kv", "jetstream-kv-sync", JetStreamKVSyncNoDirect:
		return NewJetStreamKV(kind, cfg)
	}
	return nil, fmt.Errorf("bench: unknown peer %q (known: %s)", kind, strings.Join(PeerKinds, ", "))
}

// Defaults of PeerConfig.
const (
	// DefaultPeerConns is one client connection per server of a 3-server
	// peer cluster, so that every server takes clients directly (a write
	// to a follower is forwarded to the leader, as in Rhizon).
	DefaultPeerConns = 3
	// DefaultPeerDialTimeout bounds the first connection to a peer.
	DefaultPeerDialTimeout = 10 * time.Second
)

// PeerConfig configures a peer target (etcd, JetStream KV).
type PeerConfig struct {
	// URLs are the servers' client URLs.
	URLs []string
	// Conns is the number of client connections (0: DefaultPeerConns);
	// connection i prefers server i mod len(URLs).
	Conns int
	// SetupConcurrency bounds the creates in flight during Setup
	// (0: DefaultSetupConcurrency).
	SetupConcurrency int
}

func (c *PeerConfig) normalize(name string) error {
	if len(c.URLs) == 0 {
		return fmt.Errorf("bench: %s target needs the servers' URLs", name)
	}
	if c.Conns <= 0 {
		c.Conns = DefaultPeerConns
	}
	if c.SetupConcurrency <= 0 {
		c.SetupConcurrency = DefaultSetupConcurrency
	}
	return nil
}

// rotate returns urls starting at the i-th, so that connection i dials
// server i first.
func rotate(urls []string, i int) []string {
	i %= len(urls)
	return append(append([]string(nil), urls[i:]...), urls[:i]...)
}

// forEachEntity calls f for every entity of w, with at most conc calls in
// flight, and returns the first error (which stops the rest).
func forEachEntity(ctx context.Context, w Workload, conc int, f func(ctx context.Context, key string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idx := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range min(conc, w.Entities) {
		wg.Go(func() {
			for i := range idx {
				if err := f(ctx, w.Entity(i)); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
				}
			}
		})
	}
feed:
	for i := range w.Entities {
		select {
		case idx <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
